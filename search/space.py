"""The DADA search space: the 105 sub-policies, every unordered pair of the 15 operations."""

from __future__ import annotations

from itertools import combinations

import torch

from dada_transforms.ops import OPERATION_NAMES, OPERATIONS

SUB_POLICIES: tuple[tuple[str, str], ...] = tuple(combinations(OPERATION_NAMES, 2))
"""The 105 sub-policies ``(op_i, op_j)`` with i < j in the paper's operation order."""

SUB_POLICY_OPERATIONS = torch.tensor(
    [[OPERATION_NAMES.index(first), OPERATION_NAMES.index(second)] for first, second in SUB_POLICIES]
)
"""``[105, 2]`` operation indices of each sub-policy's two slots."""

OPERATIONS_IN_SLOT: tuple[tuple[int, ...], ...] = tuple(
    tuple(sorted(set(SUB_POLICY_OPERATIONS[:, slot].tolist()))) for slot in range(2)
)
"""The operation indices that can occur in each slot (0..13 first, 1..14 second)."""

OPERATION_LOWS = torch.tensor([OPERATIONS[name].low for name in OPERATION_NAMES])
OPERATION_SPANS = torch.tensor([OPERATIONS[name].high - OPERATIONS[name].low for name in OPERATION_NAMES])
OPERATION_MIRRORED = torch.tensor([OPERATIONS[name].mirror for name in OPERATION_NAMES])
