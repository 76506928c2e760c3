"""Drawn operations applied in the search: exact values with the library's kernels, and a magnitude gradient.

Shared by every search method: a method draws, per image, its operations, application
flags, mirror signs and Cutout centres; :func:`augmented_batch` applies them with
:func:`dada_transforms.batch.apply_operations` (nearest resampling, PIL arithmetic) and
gives the magnitudes a gradient, straight-through or by autodiff through a float
surrogate of the operations that are differentiable in their magnitude.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dada_transforms.batch import apply_operations
from dada_transforms.fill import CUTOUT_FILL
from dada_transforms.functional_tensor import TensorOptions, constant
from dada_transforms.ops import OPERATION_NAMES, OPERATIONS

from .space import OPERATION_LOWS, OPERATION_MIRRORED, OPERATION_SPANS

MAGNITUDE_GRADIENTS = ("straight-through", "autodiff")

DIFFERENTIABLE_OPERATIONS: tuple[int, ...] = tuple(
    OPERATION_NAMES.index(name)
    for name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Contrast", "Color", "Brightness", "Sharpness")
)
"""Operations whose output is differentiable in the magnitude (bilinear affine maps and blends)."""

SEARCH_OPTIONS = TensorOptions(None, CUTOUT_FILL, "nearest", torch.zeros(0, 2))
_SURROGATE_OPTIONS = SEARCH_OPTIONS._replace(interpolation="bilinear")
_LOWS, _SPANS, _MIRRORED = OPERATION_LOWS.tolist(), OPERATION_SPANS.tolist(), OPERATION_MIRRORED.tolist()


@dataclass(frozen=True)
class AugmentedBatch:
    """Augmented images in [0, 1] and the straight-through magnitude term to add to the model input."""

    images: torch.Tensor  # [N, C, H, W] float; exact values, with a graph to the magnitudes if autodiff
    straight_through: torch.Tensor  # [N], value 0, gradient 1 for each applied straight-through magnitude


def signed_arguments(operations: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Signed real arguments ``low + m * (high - low)`` of ``[N, K]`` operations, mirrored ones times their sign."""
    dtype, device = magnitudes.dtype, magnitudes.device
    arguments = constant(_LOWS, dtype, device)[operations] + magnitudes * constant(_SPANS, dtype, device)[operations]
    mirrored = constant(_MIRRORED, torch.bool, device)[operations]
    return torch.where(mirrored, arguments * signs.to(arguments.dtype), arguments)


def augmented_batch(
    images: torch.Tensor,
    operations: torch.Tensor,
    applied: torch.Tensor,
    magnitudes: torch.Tensor,
    signs: torch.Tensor,
    cutout_centers: torch.Tensor,
    magnitude_grad: str,
    kinds_per_slot: Sequence[Sequence[int]],
) -> AugmentedBatch:
    """Apply each image's drawn operations to uint8 ``images`` ``[N, C, H, W]``.

    ``operations``, ``applied``, ``magnitudes`` (with a graph to the searched
    magnitudes), ``signs``: ``[N, K]``; ``cutout_centers``: ``[N, K, 2]``;
    ``kinds_per_slot``: the operations that can occur in each slot. Values are
    exact (the library's kernels). ``magnitude_grad``: ``"straight-through"``
    (every applied operation adds ``m - stop_grad(m)`` to the model input) or
    ``"autodiff"`` (the differentiable operations are recomputed in float with
    bilinear resampling to differentiate the output in m; the others fall back
    to straight-through).
    """
    if magnitude_grad not in MAGNITUDE_GRADIENTS:
        raise ValueError(f"magnitude_grad must be one of {MAGNITUDE_GRADIENTS}, got {magnitude_grad!r}")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    arguments = signed_arguments(operations, magnitudes, signs)
    exact = apply_operations(
        images, operations, applied, arguments.detach(), cutout_centers, SEARCH_OPTIONS, kinds_per_slot,
    ).float().div_(255)
    straight = applied.clone()
    if magnitude_grad == "autodiff":
        differentiable = torch.isin(operations, constant(DIFFERENTIABLE_OPERATIONS, torch.long, operations.device))
        straight &= ~differentiable
        surrogate = _differentiable_surrogate(images.float().div_(255), operations, applied, arguments, kinds_per_slot)
        exact = exact + (surrogate - surrogate.detach())
    straight_through = ((magnitudes - magnitudes.detach()) * straight).sum(1)
    return AugmentedBatch(exact, straight_through)


def _differentiable_surrogate(
    images: torch.Tensor,
    operations: torch.Tensor,
    applied: torch.Tensor,
    arguments: torch.Tensor,
    kinds_per_slot: Sequence[Sequence[int]],
) -> torch.Tensor:
    """The operations recomputed in float, differentiably in the arguments of the differentiable ones.

    Every differentiable kind is evaluated on the whole batch and selected with
    ``torch.where`` (no host synchronisation); the other operations act as the
    identity here (their magnitudes go straight through).
    """
    current = images
    options = _SURROGATE_OPTIONS._replace(cutout_centers=torch.zeros(images.shape[0], 2, device=images.device))
    for slot in range(operations.shape[1]):
        updated = current
        for index in DIFFERENTIABLE_OPERATIONS:
            if index not in kinds_per_slot[slot]:
                continue
            selected = (applied[:, slot] & (operations[:, slot] == index)).view(-1, 1, 1, 1)
            output = OPERATIONS[OPERATION_NAMES[index]].tensor(current, arguments[:, slot], options)
            updated = torch.where(selected, output, updated)
        current = updated
    return current
