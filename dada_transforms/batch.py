"""Applying drawn operations to a batch: one kernel call per operation kind and slot."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .functional_tensor import TensorOptions
from .ops import OPERATION_NAMES, OPERATIONS


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
    images = images.clone()
    if kinds_per_slot is None:
        kinds_per_slot = [operations[:, slot].unique().tolist() for slot in range(operations.shape[1])]
    for slot, kinds in enumerate(kinds_per_slot):
        for index in kinds:
            if index < 0:
                continue
            selected = (applied[:, slot] & (operations[:, slot] == index)).nonzero().squeeze(1)
            if selected.numel() == 0:
                continue
            kernel = OPERATIONS[OPERATION_NAMES[index]].tensor
            slot_options = options._replace(cutout_centers=cutout_centers[selected, slot])
            result = kernel(images.index_select(0, selected), arguments[selected, slot], slot_options)
            images.index_copy_(0, selected, result)
    return images
