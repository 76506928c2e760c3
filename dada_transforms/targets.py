"""Moving detection and segmentation targets with an image's draw, by torchvision's own v2 kernels.

Only the geometric operations move targets; each is one call of
``torchvision.transforms.v2.functional.affine`` with the arguments that express it
(see ``geometry.affine_arguments``), so boxes of every format are clamped to the
canvas, masks resampled (nearest) and keypoints moved by torchvision's conventions.
Colour operations and Cutout leave targets unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .geometry import affine_arguments
from .ops import OperationSpec

TARGET_TYPES = (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.KeyPoints)
"""The tv_tensors that DADA moves with the image: boxes, masks and keypoints."""

Target = tv_tensors.BoundingBoxes | tv_tensors.Mask | tv_tensors.KeyPoints


def canvas_size(target: Target) -> tuple[int, int]:
    """The ``(height, width)`` of the image a target belongs to."""
    if isinstance(target, tv_tensors.Mask):
        return tuple(target.shape[-2:])  # type: ignore[return-value]
    return tuple(target.canvas_size)  # type: ignore[return-value]


def move_target(
    target: Target, operations: Iterable[tuple[OperationSpec, float]], mask_fill: float | None = 0
) -> Target:
    """``target`` moved by the geometric ones of ``operations`` (``(spec, signed argument)`` pairs, in order).

    Masks are resampled with nearest neighbours and ``mask_fill`` where the image was uncovered.
    """
    if not isinstance(target, TARGET_TYPES):
        raise TypeError(f"expected BoundingBoxes, Mask or KeyPoints, got {type(target).__name__}")
    height, width = canvas_size(target)
    for spec, argument in operations:
        if not spec.geometric:
            continue
        arguments = affine_arguments(spec.name, argument, height, width)
        target = F.affine(target, **arguments, interpolation=InterpolationMode.NEAREST, fill=mask_fill)
    return target

