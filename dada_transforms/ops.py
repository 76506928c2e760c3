"""The table of the 15 DADA operations, shared by the PIL and tensor paths.

A magnitude m in [0, 1] maps to the real argument ``low + m * (high - low)``;
on mirrored operations the argument's sign is flipped with probability 1/2 at
each application (see the design notes, section 2).

The tensor kernels are named here and imported on first use, so that reading and
listing policies (``dada-transforms list``, ``show``) does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import functional_pil as fp

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class OperationSpec:
    """One operation: its argument range, whether it is mirrored, and its two kernels.

    Geometric operations also give their PIL affine coefficients, so that a batch can
    apply all of its geometric operations in one resampling pass. The tensor kernels are
    given by their names in :mod:`.functional_tensor`.
    """

    name: str
    low: float
    high: float
    mirror: bool
    pil: Callable
    tensor_kernel: str
    describe_argument: Callable[[float], str]
    coefficients_kernel: str | None = None

    @property
    def tensor(self) -> Callable:
        """The batched tensor kernel."""
        return getattr(_functional_tensor(), self.tensor_kernel)

    @property
    def affine_coefficients(self) -> Callable | None:
        """The PIL affine coefficients of a batch of arguments (geometric operations only)."""
        return None if self.coefficients_kernel is None else getattr(_functional_tensor(), self.coefficients_kernel)

    @property
    def geometric(self) -> bool:
        return self.coefficients_kernel is not None

    @property
    def has_argument(self) -> bool:
        return self.low != self.high

    def argument(self, magnitude: float) -> float:
        """The unsigned argument for a magnitude in [0, 1]."""
        return self.low + magnitude * (self.high - self.low)

    def describe(self, magnitude: float) -> str:
        """A readable form of the operation at a magnitude, e.g. ``Rotate +/-13.5 deg``."""
        if not self.has_argument:
            return self.name
        return f"{self.name} {self.describe_argument(self.argument(magnitude))}"


def _functional_tensor():
    from . import functional_tensor  # an import statement, which torch.compile traces (import_module it does not)

    return functional_tensor


def _signed(unit: str, digits: int) -> Callable[[float], str]:
    return lambda argument: f"+/-{abs(argument):.{digits}f}{unit}"


def _plain(template: str) -> Callable[[float], str]:
    return lambda argument: template.format(argument)


def _none(argument: float) -> str:
    return ""


_TABLE = (
    OperationSpec("ShearX", -0.3, 0.3, True, fp.shear_x, "shear_x", _signed("", 3), "shear_x_coefficients"),
    OperationSpec("ShearY", -0.3, 0.3, True, fp.shear_y, "shear_y", _signed("", 3), "shear_y_coefficients"),
    OperationSpec(
        "TranslateX", -0.45, 0.45, True, fp.translate_x, "translate_x", _signed(" x width", 3),
        "translate_x_coefficients",
    ),
    OperationSpec(
        "TranslateY", -0.45, 0.45, True, fp.translate_y, "translate_y", _signed(" x height", 3),
        "translate_y_coefficients",
    ),
    OperationSpec("Rotate", -30.0, 30.0, True, fp.rotate, "rotate", _signed(" deg", 1), "rotate_coefficients"),
    OperationSpec("AutoContrast", 0.0, 0.0, False, fp.auto_contrast, "auto_contrast", _none),
    OperationSpec("Invert", 0.0, 0.0, False, fp.invert, "invert", _none),
    OperationSpec("Equalize", 0.0, 0.0, False, fp.equalize, "equalize", _none),
    OperationSpec("Solarize", 0.0, 256.0, False, fp.solarize, "solarize", _plain("invert levels >= {:.0f}")),
    OperationSpec(
        "Posterize", 4.0, 8.0, False, fp.posterize, "posterize", lambda bits: f"keep {fp.posterize_bits(bits)} bits"
    ),
    OperationSpec("Contrast", 0.1, 1.9, False, fp.contrast, "contrast", _plain("x{:.2f}")),
    OperationSpec("Color", 0.1, 1.9, False, fp.color, "color", _plain("x{:.2f}")),
    OperationSpec("Brightness", 0.1, 1.9, False, fp.brightness, "brightness", _plain("x{:.2f}")),
    OperationSpec("Sharpness", 0.1, 1.9, False, fp.sharpness, "sharpness", _plain("x{:.2f}")),
    OperationSpec("Cutout", 0.0, 0.2, False, fp.cutout, "cutout", _plain("square of {:.3f} x width")),
)

OPERATIONS: dict[str, OperationSpec] = {spec.name: spec for spec in _TABLE}
"""The operations by name, in the paper's order (the search space's order)."""

OPERATION_NAMES: tuple[str, ...] = tuple(OPERATIONS)


def runs_affine_coefficients(runs: Sequence[tuple[int, torch.Tensor]], height: int, width: int) -> torch.Tensor:
    """The affine coefficients ``[N, 6]`` of runs of geometric operations, each given as (operation
    index, its arguments), concatenated in order."""
    import torch

    return torch.cat([
        OPERATIONS[OPERATION_NAMES[index]].affine_coefficients(arguments, height, width) for index, arguments in runs
    ])
