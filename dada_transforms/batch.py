"""Applying drawn operations to a batch, with a few kernel calls per slot.

Per slot, every image whose operation is geometric is resampled in one affine pass
(each kind contributes its PIL coefficients), every other operation kind runs once
on the images that drew it, and the batch is reassembled with one gather. No Python
loop runs per image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .functional_tensor import TensorOptions, affine
from .ops import OPERATION_NAMES, OPERATIONS

_GEOMETRIC = tuple(index for index, name in enumerate(OPERATION_NAMES) if OPERATIONS[name].geometric)


def apply_operations(
    images: torch.Tensor,
    operations: torch.Tensor,
    applied: torch.Tensor,
    arguments: torch.Tensor,
    cutout_centers: torch.Tensor,
    options: TensorOptions,
    kinds_per_slot: Iterable[Iterable[int]] | None = None,
) -> torch.Tensor:
    """Apply, slot by slot, each image's operation where ``applied`` is set.

    Args:
        images: ``[N, C, H, W]`` uint8 or float in [0, 1]; not modified.
        operations: ``[N, K]`` indices into ``OPERATION_NAMES`` (-1 = none).
        applied: ``[N, K]`` bool.
        arguments: ``[N, K]`` signed real arguments.
        cutout_centers: ``[N, K, 2]`` uniform draws in [0, 1).
        options: fills and interpolation (its ``cutout_centers`` is replaced per call).
        kinds_per_slot: the operation indices that can occur in each slot, if known
            (saves a device synchronisation per slot).
    """
    result = images
    if kinds_per_slot is None:
        kinds_per_slot = [operations[:, slot].unique().tolist() for slot in range(operations.shape[1])]
    for slot, kinds in enumerate(kinds_per_slot):
        kinds = [index for index in kinds if index >= 0]
        touched = applied[:, slot] & (operations[:, slot] >= 0)
        groups = []  # (indices, augmented images) for each kernel call
        geometric = [index for index in kinds if index in _GEOMETRIC]
        if geometric:
            groups.append(_apply_geometric(result, operations[:, slot], touched, arguments[:, slot], geometric, options))
        for index in kinds:
            if index in _GEOMETRIC:
                continue
            selected = (touched & (operations[:, slot] == index)).nonzero().squeeze(1)
            if selected.numel() == 0:
                continue
            kernel = OPERATIONS[OPERATION_NAMES[index]].tensor
            slot_options = options._replace(cutout_centers=cutout_centers[selected, slot])
            groups.append((selected, kernel(result.index_select(0, selected), arguments[selected, slot], slot_options)))
        result = _reassemble(result, touched, groups)
    return result if result is not images else images.clone()


def _reassemble(
    images: torch.Tensor, touched: torch.Tensor, groups: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The batch with each group's images replaced: one concatenation and one gather
    (much cheaper than scattering every group back in place)."""
    groups = [(indices, values) for indices, values in groups if indices.numel()]
    if not groups:
        return images
    untouched = (~touched).nonzero().squeeze(1)
    order = torch.cat([untouched, *(indices for indices, _ in groups)])
    stacked = torch.cat([images.index_select(0, untouched), *(values for _, values in groups)])
    return stacked.index_select(0, torch.argsort(order))


def _apply_geometric(
    images: torch.Tensor,
    operations: torch.Tensor,
    applied: torch.Tensor,
    arguments: torch.Tensor,
    kinds: Sequence[int],
    options: TensorOptions,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample in one pass every image whose operation is one of ``kinds``: (indices, images)."""
    kind_tensor = torch.tensor(kinds, device=operations.device)
    selected = (applied & torch.isin(operations, kind_tensor)).nonzero().squeeze(1)
    if selected.numel() == 0:
        return selected, images[:0]
    chosen, values = operations[selected], arguments[selected]
    height, width = images.shape[-2:]
    candidates = torch.stack(
        [OPERATIONS[OPERATION_NAMES[index]].affine_coefficients(values, height, width) for index in kinds]
    )
    position = (chosen.unsqueeze(1) == kind_tensor).int().argmax(1)
    coefficients = candidates[position, torch.arange(len(selected), device=selected.device)]
    return selected, affine(images.index_select(0, selected), coefficients, options)
