"""The ``DADA`` transform: applies a DADA policy to PIL images and image tensors."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from . import params as random_params
from .batch import apply_operations
from .fill import CUTOUT_FILL, fill_for_channels, normalize_fill
from .functional_pil import PilOptions
from .functional_tensor import TensorOptions
from .policy import Policy
from .presets import load_policy

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
_COLOUR_MODES = {"L": 1, "RGB": 3}
_ALPHA_MODES = {"LA": "L", "RGBA": "RGB"}


def _interpolation_name(interpolation: Any) -> str:
    """Accept a name, torchvision's InterpolationMode or PIL's Resampling."""
    value = getattr(interpolation, "value", interpolation)
    if isinstance(value, int):
        value = {int(mode): name for name, mode in _RESAMPLING.items()}.get(value, value)
    if isinstance(value, str) and value.lower() in _RESAMPLING:
        return value.lower()
    raise ValueError(f"interpolation must be one of {', '.join(_RESAMPLING)}, got {interpolation!r}")


def _as_policy(policy: str | os.PathLike[str] | Policy | Sequence) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, (str, os.PathLike)):
        return load_policy(policy)
    return Policy.from_list(policy)


class DADA(torch.nn.Module):
    """Apply a DADA policy: per image, one sub-policy chosen uniformly, each operation with its probability.

    Args:
        policy: a preset name (``"cifar10"``, ``"cifar100"``, ``"svhn"``, ``"imagenet"``
            or a user preset), a policy JSON file, ``"hf-hub:org/name[@revision]"``,
            a :class:`Policy`, or literal sub-policies of ``(op, probability, magnitude)``.
        interpolation: resampling of the geometric operations: ``"nearest"`` (the
            paper's), ``"bilinear"`` or ``"bicubic"``; torchvision's InterpolationMode
            and PIL's Resampling are accepted too.
        fill: colour of areas uncovered by geometric operations, one level or RGB
            in 0..255; None (default) is black.
        cutout_fill: colour of the Cutout square; default (125, 123, 114).
        magnitude_std: standard deviation of Gaussian noise added to each magnitude
            (on the [0, 1] scale) at every application; 0 (default) is the paper's.
        generator: an optional ``torch.Generator``; by default torch's global RNG.

    Inputs: a PIL image (mode L, RGB, RGBA, LA or P; returned in the same mode and
    size), or a tensor ``[..., C, H, W]`` with C in {1, 3}, uint8 or float in [0, 1],
    on any device. On a batch every image draws its own sub-policy, operations and signs.
    """

    def __init__(
        self,
        policy: str | os.PathLike[str] | Policy | Sequence = "imagenet",
        *,
        interpolation: Any = "nearest",
        fill: int | Sequence[int] | None = None,
        cutout_fill: int | Sequence[int] = CUTOUT_FILL,
        magnitude_std: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.policy = _as_policy(policy)
        self._slots = max(len(sub_policy) for sub_policy in self.policy)
        self.interpolation = _interpolation_name(interpolation)
        self.fill = normalize_fill(fill)
        self.cutout_fill = normalize_fill(cutout_fill, "cutout_fill")
        if not isinstance(magnitude_std, (int, float)) or not 0 <= magnitude_std:
            raise ValueError(f"magnitude_std must be a number >= 0, got {magnitude_std!r}")
        self.magnitude_std = float(magnitude_std)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
        self.generator = generator
        self._tables: dict[str, random_params.PolicyTable] = {}

    # -- randomness -------------------------------------------------------------

    def _table(self, device: torch.device) -> random_params.PolicyTable:
        key = str(device)
        if key not in self._tables:
            self._tables[key] = random_params.PolicyTable.from_policy(self.policy, device)
        return self._tables[key]

    def draw_params(self, count: int, device: torch.device | str = "cpu") -> random_params.DrawnParams:
        """Draw the random parameters for ``count`` images, returned on ``device``."""
        draw_device = self.generator.device if self.generator is not None else torch.device(device)
        drawn = random_params.draw(self._table(draw_device), count, self.magnitude_std, self.generator)
        return drawn if draw_device == torch.device(device) else drawn.to(torch.device(device))

    # -- application ------------------------------------------------------------

    def forward(self, image: Any) -> Any:
        if isinstance(image, Image.Image):
            return self._apply_pil(image)
        if isinstance(image, torch.Tensor):
            return self._apply_tensor(image)
        raise TypeError(f"DADA expects a PIL image or a torch.Tensor, got {type(image).__name__}")

    def _apply_pil(self, image: Image.Image) -> Image.Image:
        if image.mode == "P":
            converted = self._apply_pil(image.convert("RGB"))
            result = converted.quantize(palette=image, dither=Image.Dither.NONE)
            result.info.update(image.info)
            return result
        if image.mode not in _COLOUR_MODES and image.mode not in _ALPHA_MODES:
            raise ValueError(
                f"unsupported PIL image mode {image.mode!r}; DADA works on L, RGB, RGBA, LA and P images "
                f"(convert with image.convert('RGB'))"
            )
        if self.generator is not None and self.generator.device.type != "cpu":
            raise ValueError(f"PIL images need a CPU generator, got one on {self.generator.device}")
        channels = len(image.getbands())
        fill = None if self.fill is None else fill_for_channels(self.fill, channels)
        cutout_fill = fill_for_channels(self.cutout_fill, channels)
        resample = _RESAMPLING[self.interpolation]
        for spec, argument, center in random_params.draw_one(
            self.policy, self._slots, self.magnitude_std, self.generator
        ):
            options = PilOptions(fill, cutout_fill, resample, center)
            if image.mode in _ALPHA_MODES and not spec.geometric and spec.name != "Cutout":
                *colour_bands, alpha = image.split()
                colour = Image.merge(_ALPHA_MODES[image.mode], colour_bands)
                image = Image.merge(image.mode, (*spec.pil(colour, argument, options).split(), alpha))
            else:
                image = spec.pil(image, argument, options)
        return image

    def _apply_tensor(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim < 3:
            raise ValueError(f"expected an image tensor [..., C, H, W], got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"expected a uint8 or floating point image tensor, got dtype {images.dtype}")
        channels, height, width = images.shape[-3:]
        if channels not in (1, 3):
            raise ValueError(f"expected 1 or 3 channels, got {channels} (shape {tuple(images.shape)})")
        if height < 1 or width < 1:
            raise ValueError(f"expected a non-empty image, got shape {tuple(images.shape)}")
        batch = images.reshape(-1, channels, height, width).as_subclass(torch.Tensor)
        result = self.apply_batch(batch, self.draw_params(batch.shape[0], batch.device))
        result = result.reshape(images.shape)
        if type(images) is not torch.Tensor:
            from torchvision import tv_tensors

            return tv_tensors.wrap(result, like=images)
        return result

    def apply_batch(self, images: torch.Tensor, drawn: random_params.DrawnParams) -> torch.Tensor:
        """Apply drawn parameters to a batch ``[N, C, H, W]`` (one kernel call per operation kind)."""
        kinds = self._table(torch.device("cpu")).kinds_per_slot
        options = TensorOptions(self.fill, self.cutout_fill, self.interpolation, drawn.cutout_centers[:, 0])
        return apply_operations(
            images, drawn.operations, drawn.applied, drawn.arguments, drawn.cutout_centers, options, kinds
        )

    # -- pickling and display ---------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tables"] = {}
        return state

    def extra_repr(self) -> str:
        name = repr(self.policy.name) if self.policy.name else "custom"
        parts = [
            f"policy={name} ({len(self.policy)} sub-policies)",
            f"interpolation={self.interpolation}",
            f"fill={self.fill}",
            f"cutout_fill={self.cutout_fill}",
        ]
        if self.magnitude_std:
            parts.append(f"magnitude_std={self.magnitude_std}")
        return ", ".join(parts)
