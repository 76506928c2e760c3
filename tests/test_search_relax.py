"""RELAX: unbiased against exact gradients by enumeration, and the control variate lowers its variance."""

from __future__ import annotations

import itertools

import pytest
import torch

from dada_transforms.ops import OPERATION_NAMES
from dada_transforms.search import SUB_POLICIES
from dada_transforms.search.relax import ControlVariate, draw, relax_gradients

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


def _estimates(table, alpha, probabilities, control_variate, chunks: int, chunk: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    alphas, probs = [], []
    for _ in range(chunks):
        sample = draw(alpha, probabilities, chunk, generator)
        result = relax_gradients(_values(table, sample), alpha, probabilities, sample, control_variate, TEMPERATURE)
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


@pytest.mark.parametrize("control_seed", [0, 1])
def test_relax_is_unbiased_for_categorical_and_bernoulli_parts(control_seed):
    table, alpha, probabilities = _problem()
    exact_alpha, exact_probabilities = _exact_gradients(table, alpha, probabilities)
    control_variate = _strong_control_variate(control_seed)
    chunks = 80
    alphas, probs = _estimates(table, alpha, probabilities, control_variate, chunks, 500, seed=10 + control_seed)
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
