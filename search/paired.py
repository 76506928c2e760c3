"""Paired comparisons over seeds: the mean difference, its 95 % paired t interval, and a verdict.

Two conditions trained with the same seed share the initial network, the data
order, the crops, flips and Cutout squares, so their per-seed differences are
paired: the interval is Student's t over those differences,
``mean +/- t(0.975, n - 1) * sd / sqrt(n)`` for ``n`` seeds. The verdict is
``better`` when the whole interval lies above 0, ``worse`` when it lies below,
and ``cannot tell`` when it contains 0 or when there is one seed (no interval).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95
METHOD = "paired t over seeds: mean +/- t(0.975, n - 1) * sd / sqrt(n) of the n per-seed differences"
BETTER, WORSE, CANNOT_TELL = "better", "worse", "cannot tell"
ONE_SEED = "one seed: no interval and no verdict (a paired t interval needs at least 2 seeds; use 5 or more)"

_T_975 = (
    12.70620474, 4.30265273, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252, 2.306004135,
    2.262157163, 2.228138852, 2.20098516, 2.17881283, 2.160368656, 2.144786688, 2.131449546, 2.119905299,
    2.109815578, 2.10092204, 2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.06865761, 2.063898562,
    2.059538553, 2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)  # the 0.975 quantile of Student's t for 1..30 degrees of freedom (the regularised incomplete beta, inverted)
_Z_975 = 1.959963984540054  # the standard normal's 0.975 quantile


def t_quantile_975(degrees_of_freedom: int) -> float:
    """The 0.975 quantile of Student's t: exact to 1e-8 for 1..30 degrees of freedom, then Cornish-Fisher (error < 1e-7)."""
    if isinstance(degrees_of_freedom, bool) or not isinstance(degrees_of_freedom, int) or degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be an integer >= 1, got {degrees_of_freedom!r}")
    if degrees_of_freedom <= len(_T_975):
        return _T_975[degrees_of_freedom - 1]
    z, v = _Z_975, degrees_of_freedom
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


@dataclass(frozen=True)
class PairedDifference:
    """``condition`` minus ``baseline``, one difference per seed (same units as the scores)."""

    condition: str
    baseline: str
    differences: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95 % paired t interval of the mean difference; None for a single seed."""
        count = len(self.differences)
        if count < 2:
            return None
        half_width = t_quantile_975(count - 1) * statistics.stdev(self.differences) / math.sqrt(count)
        return self.mean - half_width, self.mean + half_width

    @property
    def verdict(self) -> str:
        """``better`` (interval above 0), ``worse`` (below 0) or ``cannot tell`` (contains 0, or one seed)."""
        interval = self.interval
        if interval is None:
            return CANNOT_TELL
        low, high = interval
        return BETTER if low > 0 else WORSE if high < 0 else CANNOT_TELL


def paired_difference(condition: str, baseline: str, scores: Sequence[float], baseline_scores: Sequence[float]) -> PairedDifference:
    """The per-seed differences ``scores[i] - baseline_scores[i]`` (both indexed by seed)."""
    if len(scores) != len(baseline_scores) or not scores:
        raise ValueError(
            f"paired scores need one value per seed on both sides, got {len(scores)} for {condition!r} "
            f"and {len(baseline_scores)} for {baseline!r}"
        )
    return PairedDifference(condition, baseline, tuple(a - b for a, b in zip(scores, baseline_scores)))
