"""The geometry of a draw: what the geometric operations do to image coordinates.

Coordinates are continuous pixel coordinates, (0, 0) the top-left corner of the
top-left pixel, as in PIL's affine transform and torchvision's boxes. Each geometric
operation is an affine map; ``affine_arguments`` gives it as the arguments of
``torchvision.transforms.v2.functional.affine`` (so that boxes, masks and keypoints
are moved by torchvision's own kernels), and ``drawn_affine_matrices`` composes the
maps a batch drew into one 2x3 matrix per image, on the batch's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .ops import OPERATION_NAMES, OPERATIONS
from .params import DrawnParams


def _shear_x(shear: float, height: int, width: int) -> dict:
    # PIL samples (x + s y, y): the point (x, y) moves to (x - s y, y), a shear about the origin.
    return {"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": [math.degrees(math.atan(shear)), 0.0],
            "center": [0.0, 0.0]}


def _shear_y(shear: float, height: int, width: int) -> dict:
    return {"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": [0.0, math.degrees(math.atan(shear))],
            "center": [0.0, 0.0]}


def _translate_x(fraction: float, height: int, width: int) -> dict:
    # PIL samples x + f W: the content moves by -f W.
    return {"angle": 0.0, "translate": [-fraction * width, 0.0], "scale": 1.0, "shear": [0.0, 0.0]}


def _translate_y(fraction: float, height: int, width: int) -> dict:
    return {"angle": 0.0, "translate": [0.0, -fraction * height], "scale": 1.0, "shear": [0.0, 0.0]}


def _rotate(degrees: float, height: int, width: int) -> dict:
    # PIL's rotate is counter-clockwise about the centre; torchvision's affine angle is clockwise.
    return {"angle": -degrees, "translate": [0.0, 0.0], "scale": 1.0, "shear": [0.0, 0.0]}


_AFFINE_ARGUMENTS: dict[str, Callable[[float, int, int], dict]] = {
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Rotate": _rotate,
}


def affine_arguments(operation: str, argument: float, height: int, width: int) -> dict:
    """The keyword arguments of torchvision's ``v2.functional.affine`` (angle, translate, scale,
    shear and, where not the centre, center) that move coordinates as geometric ``operation`` with
    its signed ``argument`` moves the pixels of an image of ``height`` x ``width``."""
    if operation not in _AFFINE_ARGUMENTS:
        raise ValueError(f"{operation!r} is not a geometric operation; expected one of {', '.join(_AFFINE_ARGUMENTS)}")
    return _AFFINE_ARGUMENTS[operation](float(argument), height, width)


def _forward_matrices(coefficients: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` maps input point -> output point from PIL's inverse coefficients ``[N, 6]``."""
    a, b, c, d, e, f = coefficients.unbind(1)
    determinant = a * e - b * d
    inverse_a, inverse_b = e / determinant, -b / determinant
    inverse_d, inverse_e = -d / determinant, a / determinant
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = (
        (inverse_a, inverse_b, -(inverse_a * c + inverse_b * f)),
        (inverse_d, inverse_e, -(inverse_d * c + inverse_e * f)),
        (zero, zero, one),
    )
    return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)


_GEOMETRIC = tuple((index, OPERATIONS[name]) for index, name in enumerate(OPERATION_NAMES) if OPERATIONS[name].geometric)


def drawn_affine_matrices(drawn: DrawnParams, height: int, width: int) -> torch.Tensor:
    """The ``[N, 2, 3]`` float64 matrices that map a point ``(x, y, 1)`` of each input image to
    where the image's geometric operations moved it, composed over the slots in order.

    Identity where no geometric operation applied. Computed on the parameters' device
    without synchronising with the host, so it suits batches on an accelerator.
    """
    count = drawn.operations.shape[0]
    identity = torch.eye(3, dtype=torch.float64, device=drawn.arguments.device).expand(count, 3, 3)
    matrices = identity
    for slot in range(drawn.operations.shape[1]):
        operations, arguments = drawn.operations[:, slot], drawn.arguments[:, slot].to(torch.float64)
        step = identity
        for index, spec in _GEOMETRIC:
            chosen = (drawn.applied[:, slot] & (operations == index)).view(count, 1, 1)
            step = torch.where(chosen, _forward_matrices(spec.affine_coefficients(arguments, height, width)), step)
        matrices = step @ matrices
    return matrices[:, :2]
