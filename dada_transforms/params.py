"""Random parameters of a policy application, drawn per image from torch's RNG.

Drawing is separate from applying: ``draw`` returns, for N images, the chosen
sub-policy, which of its operations apply, and their signed real arguments;
``draw_one`` does the same for one image in plain Python (the PIL path's speed).
Both read one row of ``1 + 4K`` uniforms laid out as [sub-policy choice,
K application draws, K sign draws, K Cutout centres (x, y)], then, with
magnitude noise, K normal draws: the same seed gives the same parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .ops import OPERATION_NAMES, OPERATIONS, OperationSpec
from .policy import Policy

_LOWS = torch.tensor([OPERATIONS[name].low for name in OPERATION_NAMES], dtype=torch.float64)
_SPANS = torch.tensor([OPERATIONS[name].high - OPERATIONS[name].low for name in OPERATION_NAMES], dtype=torch.float64)
_MIRRORED = torch.tensor([OPERATIONS[name].mirror for name in OPERATION_NAMES])


@dataclass(frozen=True)
class PolicyTable:
    """A policy as padded tensors ``[S, K]`` (operation index -1 marks padding)."""

    operations: torch.Tensor
    probabilities: torch.Tensor
    magnitudes: torch.Tensor

    @classmethod
    def from_policy(cls, policy: Policy, device: torch.device | str = "cpu") -> PolicyTable:
        width = max(len(sub_policy) for sub_policy in policy)
        operations = torch.full((len(policy), width), -1, dtype=torch.long)
        probabilities = torch.zeros(len(policy), width, dtype=torch.float64)
        magnitudes = torch.zeros(len(policy), width, dtype=torch.float64)
        for row, sub_policy in enumerate(policy):
            for column, operation in enumerate(sub_policy):
                operations[row, column] = OPERATION_NAMES.index(operation.op)
                probabilities[row, column] = operation.probability
                magnitudes[row, column] = operation.magnitude
        return cls(operations.to(device), probabilities.to(device), magnitudes.to(device))

    @property
    def slots(self) -> int:
        return self.operations.shape[1]

    def operations_in_slot(self, slot: int) -> list[int]:
        """The distinct operation indices used in one slot (column) of the policy."""
        return sorted(index for index in set(self.operations[:, slot].tolist()) if index >= 0)


@dataclass(frozen=True)
class DrawnParams:
    """Parameters for N images: all tensors have N rows, K = the policy's slots."""

    sub_policies: torch.Tensor  # [N] long
    operations: torch.Tensor  # [N, K] long, -1 = padding
    applied: torch.Tensor  # [N, K] bool
    arguments: torch.Tensor  # [N, K] float64, signed real arguments
    cutout_centers: torch.Tensor  # [N, K, 2] uniform draws in [0, 1)

    def to(self, device: torch.device) -> DrawnParams:
        return DrawnParams(*(tensor.to(device, non_blocking=True) for tensor in self.__dict__.values()))


def draw(
    table: PolicyTable,
    count: int,
    magnitude_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> DrawnParams:
    """Draw parameters for ``count`` images on the table's device (one RNG call, two with noise)."""
    device = table.operations.device
    slots = table.slots
    uniform = torch.rand(count, _row_length(slots), generator=generator, device=device, dtype=torch.float64)
    choice, applied_u, sign_u, centers = uniform.split((1, slots, slots, 2 * slots), dim=1)
    sub_policies = (choice.squeeze(1) * len(table.operations)).long().clamp_(max=len(table.operations) - 1)
    operations = table.operations[sub_policies]
    applied = (applied_u < table.probabilities[sub_policies]) & (operations >= 0)
    magnitudes = table.magnitudes[sub_policies]
    if magnitude_std > 0:
        noise = torch.randn(count, slots, generator=generator, device=device, dtype=torch.float64)
        magnitudes = (magnitudes + magnitude_std * noise).clamp_(0.0, 1.0)
    known = operations.clamp(min=0)
    lows, spans, mirrored = (constant.to(device) for constant in (_LOWS, _SPANS, _MIRRORED))
    arguments = lows[known] + magnitudes * spans[known]
    flip = mirrored[known] & (sign_u < 0.5)
    arguments = torch.where(flip, -arguments, arguments)
    return DrawnParams(sub_policies, operations, applied, arguments, centers.reshape(count, slots, 2))


def _row_length(slots: int) -> int:
    return 1 + 4 * slots


def draw_one(
    policy: Policy,
    slots: int,
    magnitude_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[tuple[OperationSpec, float, tuple[float, float]]]:
    """Draw for one image: the operations to apply, in order, with signed arguments and Cutout centres.

    ``slots`` is the policy's longest sub-policy (the row layout depends on it).
    """
    uniform = torch.rand(_row_length(slots), generator=generator, dtype=torch.float64).tolist()
    noise = torch.randn(slots, generator=generator, dtype=torch.float64).tolist() if magnitude_std > 0 else None
    sub_policy = policy[min(int(uniform[0] * len(policy)), len(policy) - 1)]
    chosen = []
    for slot, operation in enumerate(sub_policy):
        if uniform[1 + slot] >= operation.probability:
            continue
        spec = OPERATIONS[operation.op]
        magnitude = operation.magnitude
        if noise is not None:
            magnitude = min(1.0, max(0.0, magnitude + magnitude_std * noise[slot]))
        argument = spec.argument(magnitude)
        if spec.mirror and uniform[1 + slots + slot] < 0.5:
            argument = -argument
        center = 1 + 2 * slots + 2 * slot
        chosen.append((spec, argument, (uniform[center], uniform[center + 1])))
    return chosen
