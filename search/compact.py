"""The compact search space (ours): one weight and one magnitude per operation, one global probability.

Per image, N operations are drawn independently, with replacement, from
``softmax(logits)`` over the 15 operations; each applies with the probability
``p`` (one for every slot and operation), at its operation's magnitude ``m_op``,
mirrored operations with a random sign, as TrivialAugment and RandAugment draw.
A mirrored operation's magnitude is a *strength*: 0 is the identity, 1 the end of
its range (the policy format's magnitude ``0.5 + m / 2``; the format's own m = 0.5
is the identity of a mirrored operation, a saddle of the objective that a search
started there would not leave). Every image is drawn K times (K copies, each its own draw), so that a draw's value
can be compared with the other draws of the same image (:mod:`.compact_step`).
31 parameters in all, against the published space's 525: each draw informs few.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch

from dada_transforms.functional_tensor import constant
from dada_transforms.ops import OPERATION_NAMES
from dada_transforms.policy import MAX_SUB_POLICIES, Policy

from .distributed import SINGLE, Processes
from .drawn_operations import AugmentedBatch, augmented_batch
from .relax import clamped_probabilities
from .settings import MAX_OPERATIONS
from .space import OPERATION_MIRRORED

OPERATION_COUNT = len(OPERATION_NAMES)
_ALL_KINDS = tuple(range(OPERATION_COUNT))
_MIRRORED = OPERATION_MIRRORED.tolist()


@dataclass(frozen=True)
class CompactDraw:
    """The draws of M = images x K rows (row ``i * K + k``: image i's draw k), each of N slots."""

    operations: torch.Tensor  # [M, N] long, indices into OPERATION_NAMES
    applied: torch.Tensor  # [M, N] bool
    signs: torch.Tensor  # [M, N] +1 / -1, the mirror signs
    cutout_centers: torch.Tensor  # [M, N, 2] uniform centres for the Cutout operation
    draws: int  # K

    @property
    def count(self) -> int:
        """M, the rows."""
        return self.operations.shape[0]


class CompactAugmentation(torch.nn.Module):
    """The compact space's parameters: ``logits`` [15], ``magnitudes`` [15] in [0, 1], ``probability`` in [0, 1].

    Args:
        operations: N, the operations drawn per image (1 or 2: see :data:`MAX_OPERATIONS`).
    """

    def __init__(self, operations: int = 2) -> None:
        super().__init__()
        if isinstance(operations, bool) or not isinstance(operations, int) or not 1 <= operations <= MAX_OPERATIONS:
            raise ValueError(
                f"operations must be an integer in [1, {MAX_OPERATIONS}] (a policy file holds at most "
                f"{MAX_SUB_POLICIES} sub-policies, and N operations make 15 ** N), got {operations!r}"
            )
        self.operations = operations
        self.logits = torch.nn.Parameter(torch.zeros(OPERATION_COUNT))
        self.magnitudes = torch.nn.Parameter(torch.full((OPERATION_COUNT,), 0.5))
        self.probability = torch.nn.Parameter(torch.tensor(0.5))

    def architecture_parameters(self) -> list[torch.nn.Parameter]:
        return [self.logits, self.probability, self.magnitudes]

    def policy_magnitudes(self) -> torch.Tensor:
        """``[15]`` magnitudes in the policy format: ``0.5 + m / 2`` for the mirrored operations (strengths), else m."""
        mirrored = constant(_MIRRORED, torch.bool, self.magnitudes.device)  # made once per device: no per-step copy
        return torch.where(mirrored, 0.5 + 0.5 * self.magnitudes, self.magnitudes)

    def operation_weights(self) -> torch.Tensor:
        """``softmax(logits)``, ``[15]``."""
        return self.logits.softmax(0)

    def clamp_(self) -> None:
        """Keep the probability and the magnitudes in [0, 1] (called after every optimiser step)."""
        with torch.no_grad():
            self.probability.clamp_(0, 1)
            self.magnitudes.clamp_(0, 1)

    # -- drawing and augmenting -------------------------------------------------

    def sample(
        self, count: int, draws: int, generator: torch.Generator | None = None, processes: Processes = SINGLE
    ) -> CompactDraw:
        """K = ``draws`` draws for each of ``count`` images (this process's share of the global batch).

        The whole global batch's draws come from ``generator`` (one ``rand`` call, the
        same stream on every process), each process keeping its images' rows, so an
        image's draws do not depend on how many processes share the batch. The
        probability is drawn clamped to [BOUNDARY, 1 - BOUNDARY] (see :mod:`.relax`).
        """
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
        slots = self.operations
        total = count * processes.world_size * draws
        with torch.no_grad():
            uniform = torch.rand(total, 5 * slots, generator=generator, device=self.logits.device)
            uniform = processes.shard(uniform)
            choice, application, sign, centres = uniform.split((slots, slots, slots, 2 * slots), dim=1)
            cdf = self.operation_weights().cumsum(0)
            operations = torch.searchsorted(cdf, choice.contiguous(), right=True).clamp_(max=OPERATION_COUNT - 1)
            applied = application < clamped_probabilities(self.probability)
        signs = torch.where(sign < 0.5, -1.0, 1.0)
        return CompactDraw(operations, applied, signs, centres.reshape(-1, slots, 2), draws)

    def augment(self, images: torch.Tensor, sample: CompactDraw, magnitude_grad: str = "autodiff") -> AugmentedBatch:
        """Apply ``sample`` to uint8 images ``[n, C, H, W]`` (``sample.count == n * K``): ``[n * K, ...]``.

        Each image is repeated K times, each copy with its own draw; values are the
        library's kernels' (see :func:`.drawn_operations.augmented_batch`), the
        magnitudes' gradient by autodiff where an operation is differentiable
        (``"autodiff"``), else straight-through.
        """
        if images.ndim != 4 or images.shape[0] * sample.draws != sample.count:
            raise ValueError(
                f"the draw has {sample.count} rows for {sample.draws} draws per image; "
                f"got images of shape {tuple(images.shape)}"
            )
        return augmented_batch(
            images.repeat_interleave(sample.draws, dim=0), sample.operations, sample.applied,
            self.policy_magnitudes()[sample.operations], sample.signs, sample.cutout_centers, magnitude_grad,
            [_ALL_KINDS] * self.operations,
        )

    def score(self, sample: CompactDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """``d log P(draw)`` per row in closed form: ``[M, 15]`` for the logits and ``[M]`` for the probability.

        Only applied slots' operations are scored: an unapplied slot's operation does
        not touch the image, so its score has mean zero given everything a value sees
        (dropping it removes noise, not bias).
        """
        with torch.no_grad():
            weights = self.operation_weights()
            one_hot = torch.zeros(*sample.operations.shape, OPERATION_COUNT, dtype=weights.dtype, device=weights.device)
            one_hot.scatter_(2, sample.operations.unsqueeze(2), 1.0)
            applied = sample.applied.to(weights.dtype)
            logits_score = ((one_hot - weights) * applied.unsqueeze(2)).sum(1)
            theta = clamped_probabilities(self.probability).detach()
            probability_score = (applied / theta - (1 - applied) / (1 - theta)).sum(1)
        return logits_score, probability_score

    # -- export and persistence -------------------------------------------------

    def to_policy(
        self, top_k: int = 25, name: str | None = None, metadata: dict | None = None, weighted: bool = False
    ) -> Policy:
        """The learned distribution as a policy file: every ordered N-tuple of operations (repeats allowed),
        each slot ``(op, p, m_op)``.

        The ``top_k`` heaviest tuples are kept (all ``15 ** N``, in the order of
        ``itertools.product``, when ``top_k`` reaches that: the exact distribution),
        sampled with weights ``prod w_op`` renormalised over the kept ones (``weighted``)
        or chosen uniformly (the paper's export; ties in the order of ``itertools.product``).
        The metadata gets ``sub_policy_weights``: each exported tuple's ``prod w_op``.
        """
        tuples = list(itertools.product(range(OPERATION_COUNT), repeat=self.operations))
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        with torch.no_grad():
            log_weights = self.logits.detach().double().cpu().log_softmax(0)
            probability = self.probability.detach().double().clamp(0, 1).item()
            magnitudes = self.policy_magnitudes().detach().double().clamp(0, 1).cpu().tolist()
        tuple_log_weights = torch.stack([log_weights[list(indices)].sum() for indices in tuples])
        if top_k >= len(tuples):
            kept = list(range(len(tuples)))
        else:
            kept = tuple_log_weights.argsort(descending=True, stable=True)[:top_k].tolist()
        sub_policies = [[(OPERATION_NAMES[op], probability, magnitudes[op]) for op in tuples[index]] for index in kept]
        weights = tuple_log_weights[kept].exp()  # renormalised over the kept tuples by the policy file's sampling
        full_metadata: dict[str, Any] = {**(metadata or {}), "sub_policy_weights": weights.tolist()}
        policy = Policy.from_list(sub_policies, name=name, sampling_weights=weights.tolist() if weighted else None)
        return Policy(policy.sub_policies, name=name, metadata=full_metadata, sampling_weights=policy.sampling_weights)

    def tensors(self) -> dict[str, torch.Tensor]:
        """All parameters as contiguous CPU tensors (for safetensors)."""
        return {name: value.detach().cpu().clone().contiguous() for name, value in self.named_parameters()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`tensors` returned (names and shapes are checked)."""
        expected = self.tensors()
        if set(tensors) != set(expected):
            raise ValueError(f"compact tensors do not match: expected {sorted(expected)}, got {sorted(tensors)}")
        for name, value in tensors.items():
            if tuple(value.shape) != tuple(expected[name].shape):
                raise ValueError(f"compact tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(expected[name].shape)}")
        targets = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                targets[name].copy_(value)

