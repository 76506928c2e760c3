"""Applying drawn operations to a batch ``[N, C, H, W]``, slot by slot, with no Python loop per image.

Two strategies give the same bytes:

- **fixed shapes** (accelerators, and under ``torch.compile``): every tensor's shape
  depends only on the batch's shape, never on the draw, so nothing waits for the
  device and the whole application compiles into one graph. Per slot: one affine
  warp (identity coefficients for images that drew no geometric operation), on
  uint8 one lookup-table gather for all colour operations (each image's table is its
  own operation's, or the identity), then each remaining kind (Color, Sharpness,
  Cutout, and the colour kinds on float images) on the whole batch, kept where drawn.
- **grouped** (the CPU, eager): each operation kind runs only on the images that drew
  it (counted on the host, ordered with one argsort); the batch is reassembled with one
  gather. On the CPU a data-dependent shape costs nothing, and skipping undrawn images
  is several times faster than full-batch passes (measured: 224px batches, ImageNet policy).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import torch

from .functional_tensor import TensorOptions, affine, colour_table, select
from .ops import OPERATION_NAMES, OPERATIONS

_KERNELS = tuple(OPERATIONS[name].tensor for name in OPERATION_NAMES)
_GEOMETRIC = frozenset(index for index, name in enumerate(OPERATION_NAMES) if OPERATIONS[name].geometric)
_COLOUR = frozenset(index for index, kernel in enumerate(_KERNELS) if hasattr(kernel, "levels_of"))
_ALL_KINDS = tuple(range(len(OPERATION_NAMES)))


def uses_fixed_shapes(device: torch.device) -> bool:
    """Whether a batch on ``device`` is applied with fixed shapes (no host synchronisation)."""
    return device.type != "cpu" or torch.compiler.is_compiling()


def apply_operations(
    images: torch.Tensor,
    operations: torch.Tensor,
    applied: torch.Tensor,
    arguments: torch.Tensor,
    cutout_centers: torch.Tensor,
    options: TensorOptions,
    kinds_per_slot: Iterable[Iterable[int]] | None = None,
    fixed_shapes: bool | None = None,
) -> torch.Tensor:
    """Apply, slot by slot, each image's operation where ``applied`` is set.

    Args:
        images: ``[N, C, H, W]`` uint8 or float in [0, 1]; not modified.
        operations: ``[N, K]`` indices into ``OPERATION_NAMES`` (-1 = none).
        applied: ``[N, K]`` bool.
        arguments: ``[N, K]`` signed real arguments.
        cutout_centers: ``[N, K, 2]`` uniform draws in [0, 1).
        options: fills and interpolation (its ``cutout_centers`` is replaced per slot).
        kinds_per_slot: the operation indices that can occur in each slot, if known
            (fewer passes; default: every kind in every slot).
        fixed_shapes: the strategy (see the module's docstring); default
            :func:`uses_fixed_shapes` of the images' device.
    """
    if fixed_shapes is None:
        fixed_shapes = uses_fixed_shapes(images.device)
    slots = operations.shape[1]
    kinds_per_slot = [_ALL_KINDS] * slots if kinds_per_slot is None else list(kinds_per_slot)
    drawn = torch.where(applied, operations, -1)
    apply_slot = _apply_slot_fixed if fixed_shapes else _apply_slot_grouped
    result = images
    for slot, kinds in enumerate(kinds_per_slot):
        kinds = sorted(index for index in kinds if index >= 0)
        if kinds:
            slot_options = options._replace(cutout_centers=cutout_centers[:, slot])
            result = apply_slot(result, drawn[:, slot], arguments[:, slot], kinds, slot_options)
    return result if result is not images else images.clone()


@functools.cache
def compiled_apply_operations() -> Callable[..., torch.Tensor]:
    """:func:`apply_operations` under ``torch.compile(fullgraph=True)`` (fixed shapes, one graph),
    created on first use; it compiles again for each new batch shape, dtype, device or policy."""
    return torch.compile(apply_operations, fullgraph=True)


def _geometric_coefficients(
    operations: torch.Tensor, arguments: torch.Tensor, kinds: Sequence[int], height: int, width: int
) -> torch.Tensor:
    """``[N, 6]`` PIL affine coefficients of each image's geometric operation; the identity for the others."""
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64, device=operations.device)
    coefficients = identity.expand(len(operations), 6)
    for index in kinds:
        of_kind = OPERATIONS[OPERATION_NAMES[index]].affine_coefficients(arguments, height, width)
        coefficients = torch.where((operations == index).unsqueeze(1), of_kind, coefficients)
    return coefficients


def _apply_slot_fixed(
    images: torch.Tensor, operations: torch.Tensor, arguments: torch.Tensor, kinds: Sequence[int], options: TensorOptions
) -> torch.Tensor:
    """One slot with fixed shapes: every pass covers the whole batch, each image keeps its own operation's result.

    Each image changes in one pass at most, so every pass reads the slot's input.
    """
    per_image = (-1,) + (1,) * (images.ndim - 1)
    result = images
    geometric = [index for index in kinds if index in _GEOMETRIC]
    if geometric:
        coefficients = _geometric_coefficients(operations, arguments, geometric, *images.shape[-2:])
        warped = affine(images, coefficients, options)
        # nearest sampling with the identity reproduces every pixel exactly; other resamplings may not
        moved = torch.isin(operations, torch.tensor(geometric, device=operations.device)).view(per_image)
        result = warped if options.interpolation == "nearest" else torch.where(moved, warped, images)
    tabled = [index for index in kinds if index in _COLOUR] if images.dtype == torch.uint8 else []
    if tabled:
        levels = torch.arange(256, device=images.device, dtype=torch.uint8)
        tables = levels.expand(*images.shape[:2], 256)
        for index in tabled:
            of_kind = colour_table(_KERNELS[index].levels_of, images, arguments)
            tables = torch.where((operations == index).view(-1, 1, 1), of_kind, tables)
        n, channels = images.shape[:2]
        result = tables.gather(2, result.reshape(n, channels, -1).long()).view_as(images)
    for index in kinds:
        if index in _GEOMETRIC or index in tabled:
            continue
        result = select((operations == index).view(per_image), _KERNELS[index](images, arguments, options), result)
    return result


def _apply_slot_grouped(
    images: torch.Tensor, operations: torch.Tensor, arguments: torch.Tensor, kinds: Sequence[int], options: TensorOptions
) -> torch.Tensor:
    """One slot, each kind on the images that drew it (one affine pass for all geometric kinds).

    The images are ordered by operation (one argsort), so that each kind's images are one run
    of that order, counted with one bincount read on the host (``kinds`` is not needed); the
    batch is reassembled with one concatenation and one gather.
    """
    counts = torch.bincount(operations + 1, minlength=len(OPERATION_NAMES) + 1).tolist()  # untouched, then each kind
    if counts[0] == len(operations):
        return images
    runs = dict(zip(range(-1, len(OPERATION_NAMES)), torch.argsort(operations).split(counts)))
    positions, pieces = [runs[-1]], [images.index_select(0, runs[-1])]
    geometric = [index for index in range(len(OPERATION_NAMES)) if index in _GEOMETRIC and counts[index + 1]]
    if geometric:
        selected = torch.cat([runs[index] for index in geometric])
        coefficients = _geometric_coefficients(
            operations.index_select(0, selected), arguments.index_select(0, selected), geometric, *images.shape[-2:]
        )
        positions.append(selected)
        pieces.append(affine(images.index_select(0, selected), coefficients, options))
    for index, kernel in enumerate(_KERNELS):
        if index in _GEOMETRIC or not counts[index + 1]:
            continue
        selected = runs[index]
        group_options = options._replace(cutout_centers=options.cutout_centers.index_select(0, selected))
        positions.append(selected)
        pieces.append(kernel(images.index_select(0, selected), arguments.index_select(0, selected), group_options))
    return torch.cat(pieces).index_select(0, torch.argsort(torch.cat(positions)))
