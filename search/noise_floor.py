"""How far the search's parameters move when its objective says nothing about the draw: the noise floor.

A search moves every parameter even when nothing is learned: each draw gives
the drawn sub-policy's parameters a gradient, and Adam turns any gradient into
a step of about its learning rate. The noise floor is measured by a *null
pass*: the search's policy updates replayed from the start, for the same
number of steps and draws per step, with the same estimator, running baseline,
Adam (arch lr, betas), temperature and clamps (:meth:`BilevelSearchStep.policy_step`),
but with objective values drawn independently of the draw from the search's
own values (each epoch's recorded quantiles, see :func:`objective_summary`).
The magnitudes' gradient, under the null, is a zero-mean value per draw (a
second such value minus the epoch's median) on the drawn sub-policy's applied
slots. No network is trained. The band of each kind of parameter (sub-policy
weights ``softmax(alpha)``, probabilities ``p``, magnitudes ``m``) is the
largest distance from its start (1/105, 0.5, 0.5) reached by any parameter of
that kind in any of the replicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .noise_band import BAND_START
from .space import SUB_POLICIES

QUANTILE_COUNT = 21
"""An epoch's objective values are kept as their 0%, 5%, ..., 100% quantiles."""
MAX_REPLICATES = 20
_REPLICATE_BUDGET = 10_000  # total null steps aimed at: fewer replicates for long searches (at least 2)


def objective_summary(values: torch.Tensor) -> list[float]:
    """The :data:`QUANTILE_COUNT` quantiles of one epoch's objective values (every draw of every step), 6 digits."""
    levels = torch.linspace(0, 1, QUANTILE_COUNT, dtype=torch.float64)
    quantiles = torch.quantile(values.detach().double().flatten().cpu(), levels)
    return [float(f"{value:.6g}") for value in quantiles.tolist()]


@dataclass(frozen=True)
class NoiseFloor:
    """Half-widths of the bands around the start that a search learning nothing stays in."""

    weight: float  # around 1/105
    probability: float  # around 0.5
    magnitude: float  # around 0.5
    steps: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        """The result JSON's ``noise_floor`` metadata."""
        return asdict(self)

    START: ClassVar[dict[str, float]] = BAND_START
    """The search's start per kind, the centre of the bands."""

    def outside(self, weights: torch.Tensor, probabilities: torch.Tensor, magnitudes: torch.Tensor) -> dict[str, int]:
        """How many weights, probabilities and magnitudes lie outside their band around :attr:`START`."""
        found = {"weight": weights, "probability": probabilities, "magnitude": magnitudes}
        return {
            kind: int(((values.detach().double().cpu() - self.START[kind]).abs() > getattr(self, kind)).sum())
            for kind, values in found.items()
        }


def null_pass_floor(
    objective: list[list[float]],
    draws_per_step: list[int],
    *,
    estimator: str,
    arch_lr: float,
    temperature: float,
    seed: int,
    replicates: int | None = None,
) -> NoiseFloor:
    """The noise floor of a search by its null pass (see the module notes); deterministic given ``seed``.

    Args:
        objective: per epoch, the :func:`objective_summary` of the search's objective values.
        draws_per_step: the draws of each step of one epoch (1 per process per
            batch; the global batch's images per sample).
        estimator, arch_lr, temperature: the search's.
        seed: the search's seed.
        replicates: null passes (default: :data:`MAX_REPLICATES`, fewer for
            long searches so that about 10,000 steps are replayed, at least 2).
    """
    widths, replicates, steps = replayed_widths(
        objective, draws_per_step, "draws_per_step", seed, replicates,
        lambda replicate_seed: _null_replicate(objective, draws_per_step, estimator, arch_lr, temperature, replicate_seed),
    )
    method = (
        f"null pass: {replicates} replays of the {steps} policy updates (same draws per step, estimator, Adam, "
        f"temperature) with objective values drawn from each epoch's recorded values independently of the draw; "
        f"band = largest distance from the start over the parameters and replays"
    )
    return NoiseFloor(widths["weight"], widths["probability"], widths["magnitude"], steps, method)


def replayed_widths(
    objective: list[list[float]],
    per_step: list[int],
    what: str,
    seed: int,
    replicates: int | None,
    replay: Callable[[int], dict[str, float]],
) -> tuple[dict[str, float], int, int]:
    """Every method's null pass: the inputs checked, then the widest distance per kind over ``replicates`` replays.

    ``per_step`` (called ``what`` in errors) holds one positive count per step of an
    epoch; ``replay(seed)`` runs one replicate and returns its largest distance from the
    start per kind. Returns the widths, the replicates (default: :data:`MAX_REPLICATES`,
    fewer for long searches so that about 10,000 steps are replayed, at least 2) and the steps.
    """
    if not objective or any(len(summary) != QUANTILE_COUNT for summary in objective):
        raise ValueError(f"objective must hold {QUANTILE_COUNT} quantiles per epoch, got {objective!r:.200}")
    if not per_step or min(per_step) < 1:
        raise ValueError(f"{what} must be positive counts, got {per_step!r}")
    steps = len(objective) * len(per_step)
    if replicates is None:
        replicates = max(2, min(MAX_REPLICATES, _REPLICATE_BUDGET // steps))
    widths = dict.fromkeys(BAND_START, 0.0)
    for replicate in range(replicates):
        moved = replay(_seed(seed, replicate))
        widths = {kind: max(widths[kind], moved[kind]) for kind in widths}
    return widths, replicates, steps


def _seed(*entropy: int) -> int:
    return int(np.random.SeedSequence([0x6E756C6C, *entropy]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _null_replicate(
    objective: list[list[float]], draws_per_step: list[int], estimator: str, arch_lr: float, temperature: float, seed: int
) -> dict[str, float]:
    """One null pass on the CPU: the largest distance from the start per kind of parameter."""
    from .augmentation import AugmentationParameters  # imported here: `dada-transforms show` reads this module
    from .bilevel import BilevelSearchStep

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the control variate's initialisation (relax)
        augmentation = AugmentationParameters(temperature=temperature)
        placeholder = torch.nn.Linear(1, 1)  # the updates of (alpha, p, m) do not involve the network
        step = BilevelSearchStep(
            placeholder, augmentation, lr=1.0, weight_decay=0.0, mean=(0.0,), std=(1.0,), arch_lr=arch_lr, estimator=estimator
        )
    generator = torch.Generator().manual_seed(seed)
    levels = torch.linspace(0, 1, QUANTILE_COUNT, dtype=torch.float64)
    for summary in objective:
        quantiles = torch.tensor(summary, dtype=torch.float64)
        median = quantiles[QUANTILE_COUNT // 2]
        for draws in draws_per_step:
            sample = augmentation.sample(draws, True, generator)
            uniforms = torch.rand(2, draws, generator=generator, dtype=torch.float64)
            values, gradients = _interpolated(uniforms, levels, quantiles)
            sub_policy, applied = sample.per_image()
            magnitudes = torch.zeros(len(SUB_POLICIES), 2, dtype=torch.float64)
            magnitudes.index_put_((sub_policy,), applied * (gradients - median).unsqueeze(1) / draws, accumulate=True)
            step.policy_step(values.float(), sample, magnitudes.float())
    with torch.no_grad():
        return {
            "weight": (augmentation.sub_policy_weights() - BAND_START["weight"]).abs().max().item(),
            "probability": (augmentation.probabilities - 0.5).abs().max().item(),
            "magnitude": (augmentation.magnitudes - 0.5).abs().max().item(),
        }


def _interpolated(uniforms: torch.Tensor, levels: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Draws from the distribution whose quantiles at ``levels`` are ``quantiles`` (linear in between)."""
    upper = torch.searchsorted(levels, uniforms.contiguous()).clamp(1, len(levels) - 1)
    lower = upper - 1
    fraction = (uniforms - levels[lower]) / (levels[upper] - levels[lower])
    return quantiles[lower] + fraction * (quantiles[upper] - quantiles[lower])
