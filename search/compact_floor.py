"""The compact search's noise floor: how far its parameters move when its objective says nothing about the draw.

As :mod:`.noise_floor` does for the published search: a null pass replays the
search's policy updates (:meth:`.compact_step.CompactSearchStep.policy_step`: the
leave-one-out estimator, Adam, the clamp) from the start, for the same steps,
images per step and draws per image, with values drawn independently of the draw
from each epoch's recorded quantiles, and a zero-mean magnitude gradient per draw
on its applied operations. The bands are centred on the compact start (operation
weight 1/15, probability 0.5, magnitude 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .noise_band import COMPACT_BAND_START
from .noise_floor import QUANTILE_COUNT, NoiseFloor, _interpolated, replayed_widths


@dataclass(frozen=True)
class CompactNoiseFloor(NoiseFloor):
    """Half-widths of the bands around the compact start (weight 1/15, p 0.5, m 0.5); same record as :class:`NoiseFloor`."""

    START = COMPACT_BAND_START


def compact_null_pass_floor(
    objective: list[list[float]],
    batch_sizes: list[int],
    *,
    draws: int,
    operations: int,
    arch_lr: float,
    seed: int,
    replicates: int | None = None,
) -> CompactNoiseFloor:
    """The noise floor of a compact search by its null pass; deterministic given ``seed``.

    Args:
        objective: per epoch, the :func:`.noise_floor.objective_summary` of the search's values.
        batch_sizes: the global images of each step of one epoch.
        draws, operations, arch_lr: the search's K, N and Adam learning rate.
        seed: the search's seed.
        replicates: null passes (default as :func:`.noise_floor.null_pass_floor`).
    """
    widths, replicates, steps = replayed_widths(
        objective, batch_sizes, "batch_sizes", seed, replicates,
        lambda replicate_seed: _null_replicate(objective, batch_sizes, draws, operations, arch_lr, replicate_seed),
    )
    method = (
        f"null pass: {replicates} replays of the {steps} compact policy updates (same images per step, {draws} draws "
        f"per image, leave-one-out estimator, Adam) with objective values drawn from each epoch's recorded values "
        f"independently of the draw; band = largest distance from the start over the parameters and replays"
    )
    return CompactNoiseFloor(widths["weight"], widths["probability"], widths["magnitude"], steps, method)


def _null_replicate(
    objective: list[list[float]], batch_sizes: list[int], draws: int, operations: int, arch_lr: float, seed: int
) -> dict[str, float]:
    """One null pass on the CPU: the largest distance from the start per kind of parameter."""
    from .compact import CompactAugmentation
    from .compact_step import CompactSearchStep

    parameters = CompactAugmentation(operations)
    placeholder = torch.nn.Linear(1, 1)  # the policy updates do not involve the network
    step = CompactSearchStep(
        placeholder, parameters, draws=draws, lr=1.0, weight_decay=0.0, mean=(0.0,), std=(1.0,), arch_lr=arch_lr
    )
    generator = torch.Generator().manual_seed(seed)
    levels = torch.linspace(0, 1, QUANTILE_COUNT, dtype=torch.float64)
    for summary in objective:
        quantiles = torch.tensor(summary, dtype=torch.float64)
        median = quantiles[QUANTILE_COUNT // 2]
        for images in batch_sizes:
            sample = parameters.sample(images, draws, generator)
            uniforms = torch.rand(2, sample.count, generator=generator, dtype=torch.float64)
            values, gradients = _interpolated(uniforms, levels, quantiles)
            magnitudes = torch.zeros(15, dtype=torch.float64)
            per_slot = (sample.applied * (gradients - median).unsqueeze(1) / sample.count).flatten()
            magnitudes.index_put_((sample.operations.flatten(),), per_slot, accumulate=True)
            step.policy_step(values.float(), sample, magnitudes.float())
    with torch.no_grad():
        return {
            "weight": (parameters.operation_weights() - COMPACT_BAND_START["weight"]).abs().max().item(),
            "probability": (parameters.probability - COMPACT_BAND_START["probability"]).abs().item(),
            "magnitude": (parameters.magnitudes - COMPACT_BAND_START["magnitude"]).abs().max().item(),
        }
