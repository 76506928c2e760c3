"""Random parameters of a policy application, drawn per image from torch's RNG.

Drawing is separate from applying: ``draw`` returns, for N images, the chosen
sub-policy, which of its operations apply, and their signed real arguments;
``draw_one`` does the same for one image in plain Python (the PIL path's speed).
Both read one row of ``1 + 4K`` uniforms laid out as [sub-policy choice,
K application draws, K sign draws, K Cutout centres (x, y)], then, with
magnitude noise, K normal draws: the same seed gives the same parameters.
The sub-policy is ``floor(u * S)`` for a uniform policy of S sub-policies and,
for a weighted one, the first whose cumulative probability exceeds ``u``
(inverse CDF): the same single uniform either way, so both paths agree.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from .ops import OPERATION_NAMES, OPERATIONS, OperationSpec
from .policy import Policy

@dataclass(frozen=True)
class PolicyTable:
    """A policy as padded tensors ``[S, K]`` on one device (operation index -1 marks padding,
    with probability 0: it is never applied).

    Besides each entry's probability and magnitude it holds its operation's argument
    range and mirroring, so that drawing needs no other tensor on the device.
    """

    operations: torch.Tensor
    entries: torch.Tensor  # [S, K, 4] float64: probability, magnitude, argument low, argument span
    mirrored: torch.Tensor
    kinds_per_slot: tuple[tuple[int, ...], ...]  # the distinct operation indices of each slot
    sampling_cdf: torch.Tensor | None  # [S] float64, the policy's cumulative sampling probabilities; None: uniform

    @classmethod
    def from_policy(cls, policy: Policy, device: torch.device | str = "cpu") -> PolicyTable:
        width = max(len(sub_policy) for sub_policy in policy)
        operations = torch.full((len(policy), width), -1, dtype=torch.long)
        entries = torch.zeros(len(policy), width, 4, dtype=torch.float64)
        mirrored = torch.zeros(len(policy), width, dtype=torch.bool)
        for row, sub_policy in enumerate(policy):
            for column, operation in enumerate(sub_policy):
                spec = OPERATIONS[operation.op]
                operations[row, column] = OPERATION_NAMES.index(operation.op)
                entries[row, column] = torch.tensor(
                    (operation.probability, operation.magnitude, spec.low, spec.high - spec.low), dtype=torch.float64
                )
                mirrored[row, column] = spec.mirror
        kinds = tuple(
            tuple(sorted({index for index in operations[:, slot].tolist() if index >= 0})) for slot in range(width)
        )
        cdf = None if policy.sampling_cdf is None else torch.tensor(policy.sampling_cdf, dtype=torch.float64, device=device)
        return cls(operations.to(device), entries.to(device), mirrored.to(device), kinds, cdf)

    @property
    def slots(self) -> int:
        return self.operations.shape[1]


@dataclass(frozen=True)
class DrawnParams:
    """Parameters for N images: all tensors have N rows, K = the policy's slots."""

    sub_policies: torch.Tensor  # [N] long
    operations: torch.Tensor  # [N, K] long, -1 = padding
    applied: torch.Tensor  # [N, K] bool
    arguments: torch.Tensor  # [N, K] float64, signed real arguments
    cutout_centers: torch.Tensor  # [N, K, 2] uniform draws in [0, 1)

    def to(self, device: torch.device) -> DrawnParams:
        """The parameters on ``device``: asynchronously onto an accelerator, but to the CPU with a
        blocking copy (an asynchronous device-to-host copy could be read before it completes)."""
        non_blocking = torch.device(device).type != "cpu"
        return DrawnParams(*(tensor.to(device, non_blocking=non_blocking) for tensor in self.__dict__.values()))


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
    sub_policy_count = table.operations.shape[0]
    if table.sampling_cdf is None:
        sub_policies = (choice.squeeze(1) * sub_policy_count).long().clamp_(max=sub_policy_count - 1)
    else:  # inverse CDF, as bisect_right in draw_one; on the device, no host read
        sub_policies = torch.searchsorted(table.sampling_cdf, choice.squeeze(1).contiguous(), right=True).clamp_(max=sub_policy_count - 1)
    operations = table.operations.index_select(0, sub_policies)
    probabilities, magnitudes, lows, spans = table.entries.index_select(0, sub_policies).unbind(2)
    applied = applied_u < probabilities  # never on padding (probability 0)
    if magnitude_std > 0:
        noise = torch.randn(count, slots, generator=generator, device=device, dtype=torch.float64)
        magnitudes = (magnitudes + magnitude_std * noise).clamp_(0.0, 1.0)
    arguments = lows + magnitudes * spans
    flip = table.mirrored.index_select(0, sub_policies) & (sign_u < 0.5)
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
    cdf = policy.sampling_cdf
    index = int(uniform[0] * len(policy)) if cdf is None else bisect.bisect_right(cdf, uniform[0])
    sub_policy = policy[min(index, len(policy) - 1)]
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


def applied_operations(drawn: DrawnParams) -> list[list[tuple[OperationSpec, float, tuple[float, float]]]]:
    """Per image, the operations ``drawn`` applies, in order, with signed arguments and Cutout
    centres, as :func:`draw_one` gives them (read back to the host)."""
    rows = zip(drawn.operations.tolist(), drawn.applied.tolist(), drawn.arguments.tolist(), drawn.cutout_centers.tolist())
    return [
        [
            (OPERATIONS[OPERATION_NAMES[index]], argument, (center[0], center[1]))
            for index, used, argument, center in zip(*row)
            if used and index >= 0
        ]
        for row in rows
    ]
