"""The paired statistics of ``evaluate``: Student's t quantiles, the paired t interval, the verdict."""

from __future__ import annotations

import math

import pytest

from dada_transforms.search.paired import BETTER, CANNOT_TELL, WORSE, paired_difference, t_quantile_975

# The two-sided 95 % critical values of Student's t as printed in published tables
# (e.g. NIST/SEMATECH e-Handbook of Statistical Methods, table 1.3.6.7.2), 3 decimals.
PUBLISHED_T_975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
    21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042,
    40: 2.021, 50: 2.009, 60: 2.000, 80: 1.990, 100: 1.984,
}


@pytest.mark.parametrize("df, published", sorted(PUBLISHED_T_975.items()))
def test_t_quantiles_match_the_published_table(df, published) -> None:
    assert t_quantile_975(df) == pytest.approx(published, abs=5e-4)


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30, 31, 35, 47, 99, 1000])
def test_t_quantiles_invert_students_distribution(df) -> None:
    """mpmath's regularised incomplete beta (Student's CDF) gives 0.975 at the quantile, to 1e-6."""
    mpmath = pytest.importorskip("mpmath")
    t = t_quantile_975(df)
    cdf = 1 - mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True) / 2
    assert float(cdf) == pytest.approx(0.975, abs=1e-6)


@pytest.mark.parametrize("df", [0, -1, 2.0, True, None])
def test_bad_degrees_of_freedom_are_refused(df) -> None:
    with pytest.raises(ValueError, match="degrees of freedom must be an integer >= 1"):
        t_quantile_975(df)


def test_the_paired_t_interval_by_hand() -> None:
    """Five seeds, differences 1..5: mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776 from the table."""
    baseline = [0.50, 0.40, 0.70, 0.60, 0.30]
    policy = [b + d for b, d in zip(baseline, [0.01, 0.02, 0.03, 0.04, 0.05])]
    comparison = paired_difference("policy", "no-policy", policy, baseline)
    assert comparison.differences == pytest.approx((0.01, 0.02, 0.03, 0.04, 0.05))
    assert comparison.mean == pytest.approx(0.03)
    half_width = 2.776 * math.sqrt(2.5) / math.sqrt(5) / 100
    low, high = comparison.interval
    assert (low, high) == pytest.approx((0.03 - half_width, 0.03 + half_width), abs=1e-5)
    assert comparison.verdict == BETTER


def test_pairing_is_what_makes_the_interval_narrow() -> None:
    """The same scores unpaired would span 0; paired, a constant +1 point difference is certain."""
    baseline = [0.90, 0.80, 0.95]
    comparison = paired_difference("a", "b", [b + 0.01 for b in baseline], baseline)
    low, high = comparison.interval
    assert low == pytest.approx(0.01) and high == pytest.approx(0.01) and comparison.verdict == BETTER


@pytest.mark.parametrize(
    "differences, verdict",
    [
        ([-0.03, -0.02, -0.04, -0.03, -0.02], WORSE),
        ([0.03, -0.02, 0.01, 0.0, 0.02], CANNOT_TELL),
        ([0.0, 0.0, 0.0], CANNOT_TELL),
        ([0.05, 0.051], BETTER),
        ([0.05, 0.06], CANNOT_TELL),  # two seeds: t(0.975, 1) = 12.7 makes the interval wide
        ([0.05, -0.06], CANNOT_TELL),
    ],
)
def test_the_verdict_follows_the_interval(differences, verdict) -> None:
    comparison = paired_difference("a", "b", differences, [0.0] * len(differences))
    assert comparison.verdict == verdict
    low, high = comparison.interval
    assert (low > 0) == (verdict == BETTER) and (high < 0) == (verdict == WORSE)


def test_one_seed_has_no_interval_and_no_verdict() -> None:
    comparison = paired_difference("a", "b", [0.9], [0.5])
    assert comparison.mean == pytest.approx(0.4)
    assert comparison.interval is None and comparison.verdict == CANNOT_TELL


def test_unpaired_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="one value per seed on both sides, got 2 for 'a' and 3 for 'b'"):
        paired_difference("a", "b", [0.1, 0.2], [0.1, 0.2, 0.3])
