"""The gradient estimators: unbiased against exact gradients by enumeration, their variances, the boundaries."""

from __future__ import annotations

import itertools

import pytest
import torch

from dada_transforms.ops import OPERATION_NAMES
from dada_transforms.search import SUB_POLICIES
from dada_transforms.search.relax import (
    ControlVariate,
    RunningBaseline,
    baseline_gradients,
    draw,
    relax_gradients,
    score_function_gradients,
    shrunk_mean,
)
from dada_transforms.search.settings import ESTIMATORS

TEMPERATURE = 0.5


def _problem(seed: int = 0):
    """A small objective E_b[f(b)]: 3 categories, each with two Bernoulli bits; f a fixed table."""
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(3, 2, 2, generator=generator, dtype=torch.float64) * 2 + 1
    alpha = torch.tensor([0.4, -0.6, 0.1], dtype=torch.float64, requires_grad=True)
    probabilities = torch.tensor([[0.3, 0.8], [0.55, 0.15], [0.65, 0.4]], dtype=torch.float64, requires_grad=True)
    return table, alpha, probabilities


def _exact_gradients(table, alpha, probabilities):
    """d E[f] / d (alpha, p) by enumerating every (category, bit, bit)."""
    weights = alpha.softmax(0)
    expectation = 0.0
    for category, first, second in itertools.product(range(3), (0, 1), (0, 1)):
        p_first, p_second = probabilities[category]
        chance = (p_first if first else 1 - p_first) * (p_second if second else 1 - p_second)
        expectation = expectation + weights[category] * chance * table[category, first, second]
    return torch.autograd.grad(expectation, (alpha, probabilities))


def _values(table, sample):
    bits = sample.applied().long()
    return table[sample.sub_policy, bits[:, 0], bits[:, 1]]


def _estimate(estimator, values, alpha, probabilities, sample, control_variate, running: RunningBaseline):
    """One estimate from ``values`` of D draws, as the step computes it.

    The baseline estimator reads ``running`` (earlier steps' values) before this step's values join it.
    """
    if estimator == "relax":
        return relax_gradients(values, alpha, probabilities, sample, control_variate, TEMPERATURE)
    if estimator == "score-function":
        return score_function_gradients(values, alpha, probabilities, sample)
    baseline = running.value(values)
    running.update(values)
    return baseline_gradients(values, baseline.expand_as(values), alpha, probabilities, sample)


def _estimates(table, alpha, probabilities, control_variate, chunks: int, chunk: int, seed: int, estimator="relax"):
    generator = torch.Generator().manual_seed(seed)
    running = RunningBaseline()
    alphas, probs = [], []
    for _ in range(chunks):
        sample = draw(alpha, probabilities, chunk, generator)
        result = _estimate(estimator, _values(table, sample), alpha, probabilities, sample, control_variate, running)
        alphas.append(result.alpha)
        probs.append(result.probabilities)
    return torch.stack(alphas), torch.stack(probs)


def _strong_control_variate(seed: int) -> ControlVariate:
    """A control variate with large outputs and slopes, so that a wrong conditional relaxation shows as bias."""
    torch.manual_seed(seed)
    control_variate = ControlVariate(9).double()
    with torch.no_grad():
        for parameter in control_variate.parameters():
            parameter.mul_(6.0)
    return control_variate


@pytest.mark.parametrize(
    "estimator, control_seed", [("relax", 0), ("relax", 1), ("score-function", 0), ("baseline", 0)]
)
def test_estimators_are_unbiased_for_categorical_and_bernoulli_parts(estimator, control_seed):
    table, alpha, probabilities = _problem()
    exact_alpha, exact_probabilities = _exact_gradients(table, alpha, probabilities)
    control_variate = _strong_control_variate(control_seed)
    chunks = 80
    alphas, probs = _estimates(
        table, alpha, probabilities, control_variate, chunks, 500, seed=10 + control_seed, estimator=estimator
    )
    for estimates, exact in ((alphas, exact_alpha), (probs, exact_probabilities)):
        mean = estimates.mean(0)
        standard_error = estimates.std(0) / chunks**0.5
        assert torch.all((mean - exact).abs() < 4.5 * standard_error + 1e-3), (mean, exact, standard_error)


def test_trained_control_variate_lowers_the_variance():
    table, alpha, probabilities = _problem(seed=3)
    torch.manual_seed(0)
    control_variate = ControlVariate(9).double()
    before = _estimates(table, alpha, probabilities, control_variate, 40, 1, seed=5)
    optimizer = torch.optim.Adam(control_variate.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(6)
    for _ in range(300):
        sample = draw(alpha, probabilities, 32, generator)
        result = relax_gradients(_values(table, sample), alpha, probabilities, sample, control_variate, TEMPERATURE)
        optimizer.zero_grad()
        result.variance_loss.backward()
        optimizer.step()
    after = _estimates(table, alpha, probabilities, control_variate, 40, 1, seed=5)

    def variance(estimates):
        return sum(part.var(0).sum() for part in estimates)

    assert variance(after) < 0.7 * variance(before)


def _total_variance(estimates) -> float:
    return sum(part.var(0).sum().item() for part in estimates)


def _default_estimates(table, alpha, probabilities, draws: int, steps: int, seed: int, decay: float = 0.98):
    """The default estimator as the step runs it, and c = 0 on the same draws, for ``steps`` steps of ``draws`` draws.

    The baseline is the running baseline of the earlier steps' values (read before this step's values join it).
    """
    generator = torch.Generator().manual_seed(seed)
    running = RunningBaseline(decay)
    default, plain = [], []
    for _ in range(steps):
        sample = draw(alpha, probabilities, draws, generator)
        values = _values(table, sample)
        default.append(_estimate("baseline", values, alpha, probabilities, sample, None, running))
        plain.append(score_function_gradients(values, alpha, probabilities, sample))
    return default, plain


def _variances(results) -> tuple[float, float]:
    """Per-parameter variance of the alpha and p estimates, summed over the entries."""
    return tuple(torch.stack([getattr(r, name) for r in results]).var(0).sum().item() for name in ("alpha", "probabilities"))


@pytest.mark.parametrize("draws", [1, 8])
@pytest.mark.parametrize("offset", [3.0, 0.0])
def test_default_estimator_has_no_more_variance_than_no_control_variate(draws, offset):
    """For alpha and for p, with one draw per step (per-batch) and with several (per-sample).

    With a mean far from 0 (offset 3, as the search's objective often has) the
    baseline removes most of alpha's variance; with a mean lost in the spread
    (offset 0) the shrunk baseline fades and alpha's variance stays about that
    of c = 0: the shrunk mean of n noisy values adds about half its own
    variance, 1/(2n) of the values' (the running baseline: n ~ 99 steps).
    """
    table, alpha, probabilities = _problem(seed=3)
    with torch.no_grad():
        table += offset - table.mean()
    default, plain = _default_estimates(table, alpha, probabilities, draws, steps=600, seed=7)
    assert ESTIMATORS[0] == "baseline"  # the default
    (default_alpha, default_p), (plain_alpha, plain_p) = _variances(default), _variances(plain)
    assert default_p < 0.8 * plain_p  # the other sub-policies' bits are not scored
    assert default_alpha < (0.3 if offset else 1.03) * plain_alpha, (default_alpha, plain_alpha)


@pytest.mark.parametrize("draws", [1, 8])
@pytest.mark.parametrize("decay", [0.5, 0.98])
def test_default_estimator_with_its_running_baseline_is_unbiased(draws, decay):
    """One draw per step (per-batch) or several (per-sample): the running baseline is read before the step's
    values join it (with decay 0.5, a baseline that included them would scale the estimate by 1/2 with one
    draw, by 15/16 with 8)."""
    table, alpha, probabilities = _problem()
    with torch.no_grad():
        table += 3.0  # a mean far from 0: the baseline is large
    exact_alpha, exact_probabilities = _exact_gradients(table, alpha, probabilities)
    default, _ = _default_estimates(table, alpha, probabilities, draws=draws, steps=3000, seed=11, decay=decay)
    for name, exact in (("alpha", exact_alpha), ("probabilities", exact_probabilities)):
        estimates = torch.stack([getattr(result, name) for result in default]).view(30, 100, *exact.shape).mean(1)
        standard_error = estimates.std(0) / 30**0.5
        assert torch.all((estimates.mean(0) - exact).abs() < 4.5 * standard_error + 1e-3), (estimates.mean(0), exact)


def test_running_baseline_is_the_shrunk_weighted_mean_of_earlier_values():
    values = torch.tensor([0.5, -0.1, 0.3, 0.9, 0.2, 0.4], dtype=torch.float64)
    running = RunningBaseline(decay=0.8)
    like = torch.zeros(1, dtype=torch.float64)
    for count, value in enumerate(values):
        expected = torch.zeros((), dtype=torch.float64)  # nothing before two values
        if count >= 2:
            seen = values[:count]
            weights = 0.8 ** torch.arange(count - 1, -1, -1, dtype=torch.float64)
            total, squares = weights.sum(), weights.square().sum()
            mean = (weights * seen).sum() / total
            variance = (weights * (seen - mean).square()).sum() / (total - squares / total)
            expected = shrunk_mean(mean, variance * squares / total**2)
        torch.testing.assert_close(running.value(like), expected)
        running.update(value.view(1).float())
    assert running.value(torch.zeros(1)).dtype == torch.float32
    resumed = RunningBaseline(decay=0.8)
    resumed.load_state_dict(running.state_dict())
    assert torch.equal(resumed.value(like), running.value(like))
    with pytest.raises(ValueError, match="statistics"):
        resumed.load_state_dict({"statistics": torch.zeros(3)})
    with pytest.raises(ValueError, match="decay"):
        RunningBaseline(decay=1.0)


def test_running_baseline_fades_where_the_mean_is_lost_in_the_spread():
    generator = torch.Generator().manual_seed(0)
    clear, lost = RunningBaseline(), RunningBaseline()
    for _ in range(200):
        clear.update(torch.randn(1, generator=generator) * 0.1 + 1.0)
        lost.update(torch.randn(1, generator=generator) * 10.0 + 0.1)
    like = torch.zeros(1)
    assert 0.9 < clear.value(like) < 1.1
    assert lost.value(like).abs() < 0.5 * 10.0 / 99**0.5  # under half the standard error of the mean


@pytest.mark.parametrize("inward", [True, False])
def test_a_probability_at_a_boundary_comes_back_when_the_gradient_says_so(inward):
    """With the default estimator, p starts at 0 (first bits) and 1 (second bits), clamped to [0, 1] after each step.

    f is negative everywhere, so an estimate that never draws the rare branch
    (a clamp to a tiny eps) would read -f(b) * d log P(b) and push p further out.
    """
    estimator = ESTIMATORS[0]
    sign = -1.0 if inward else 1.0
    bits = torch.tensor([0.0, 1.0], dtype=torch.float64)
    table = -2.0 + sign * (bits.view(2, 1) - bits.view(1, 2)).expand(3, 2, 2)  # f = -2 + s (b1 - b2)
    alpha = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    probabilities = torch.tensor([[0.0, 1.0]] * 3, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    control_variate = ControlVariate(9).double()
    optimizer = torch.optim.Adam([probabilities], lr=0.02, betas=(0.5, 0.999))
    generator = torch.Generator().manual_seed(1)
    running = RunningBaseline()
    for _ in range(300):
        sample = draw(alpha, probabilities, 4, generator)
        result = _estimate(estimator, _values(table, sample), alpha, probabilities, sample, control_variate, running)
        probabilities.grad = result.probabilities
        optimizer.step()
        with torch.no_grad():
            probabilities.clamp_(0, 1)
    if inward:  # d E[f] / d p = s * (+1, -1) per category: minimising moves p back inside
        assert probabilities[:, 0].min() > 0.3 and probabilities[:, 1].max() < 0.7, probabilities
    else:
        assert probabilities[:, 0].max() < 0.05 and probabilities[:, 1].min() > 0.95, probabilities


@pytest.mark.parametrize("estimator", ["baseline", "score-function"])
def test_at_a_boundary_the_estimate_is_the_gradient_at_the_clamped_probability(estimator):
    table, alpha, _ = _problem()
    stored = torch.tensor([[0.0, 1.0], [0.55, 0.0], [1.0, 0.4]], dtype=torch.float64, requires_grad=True)
    drawn = stored.detach().clamp(0.01, 0.99).requires_grad_()
    exact_alpha, exact_probabilities = _exact_gradients(table, alpha, drawn)
    alphas, probs = _estimates(table, alpha, stored, None, 80, 500, seed=3, estimator=estimator)
    for estimates, exact in ((alphas, exact_alpha), (probs, exact_probabilities)):
        standard_error = estimates.std(0) / 80**0.5
        assert torch.all((estimates.mean(0) - exact).abs() < 4.5 * standard_error + 1e-3), (estimates.mean(0), exact)


def test_draw_frequencies_follow_the_parameters():
    alpha = torch.tensor([1.0, 0.0, -1.0])
    probabilities = torch.tensor([[0.2, 0.9], [0.5, 0.5], [0.7, 0.1]])
    sample = draw(alpha, probabilities, 40000, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(sample.sub_policy, minlength=3).double() / 40000
    torch.testing.assert_close(frequencies, alpha.softmax(0).double(), atol=0.01, rtol=0)
    torch.testing.assert_close(sample.bits.double().mean(0), probabilities.double(), atol=0.01, rtol=0)


def test_search_space_is_every_pair_in_paper_order():
    assert len(SUB_POLICIES) == 105
    assert SUB_POLICIES == tuple(itertools.combinations(OPERATION_NAMES, 2))
    assert SUB_POLICIES[0] == ("ShearX", "ShearY") and SUB_POLICIES[-1] == ("Sharpness", "Cutout")


def test_bad_inputs_raise_value_errors():
    alpha = torch.zeros(3, requires_grad=True)
    probabilities = torch.full((3, 2), 0.5, requires_grad=True)
    with pytest.raises(ValueError, match="count"):
        draw(alpha, probabilities, 0)
    with pytest.raises(ValueError, match="probabilities"):
        draw(alpha, torch.full((4, 2), 0.5), 2)
    sample = draw(alpha, probabilities, 4)
    with pytest.raises(ValueError, match="one value per draw"):
        relax_gradients(torch.zeros(3), alpha, probabilities, sample, ControlVariate(9), TEMPERATURE)
    with pytest.raises(ValueError, match="one baseline per draw"):
        baseline_gradients(torch.zeros(4), torch.zeros(1), alpha, probabilities, sample)
