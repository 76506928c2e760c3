"""Discrete draws, their continuous relaxations and the RELAX gradient estimator.

The search draws, per step (or per image), one sub-policy ``s`` from
``softmax(alpha)`` and one application bit ``b[j, k]`` for every operation of
every sub-policy from ``Bernoulli(p[j, k])`` (as the authors' code does; only
the chosen sub-policy's two bits touch the image). RELAX (Grathwohl et al.,
2018) estimates the gradient of ``E[f(b)]`` with respect to ``alpha`` and ``p``::

    g = (f(b) - c(z~)) * d log P(b) + d c(z) - d c(z~)

where ``z`` is the Gumbel (categorical) or logistic (Bernoulli) relaxation of
the draw, ``z~`` the relaxation conditioned on the hard draw ``b``, both
tempered (``softmax(z / tau)``, ``sigmoid(z / tau)``) before entering the
control variate ``c``. The estimate is unbiased for any ``c``; ``c`` is trained
to minimise the mean of ``g ** 2``, i.e. the estimator's variance.

Three estimators of the same gradient are offered (``settings.ESTIMATORS``):

- ``"baseline"`` (the default): ``(f(b) - beta) * d log P(b)`` where only the
  chosen sub-policy's two bits enter ``log P`` (the other 208 bits do not touch
  the image, so their score terms have mean zero and are pure noise), and
  ``beta`` is a baseline fixed before the step's draws (:class:`RunningBaseline`:
  a shrunk running mean of earlier steps' values);
- ``"relax"``: RELAX as above, with the trained control variate ``c_phi``;
- ``"score-function"``: ``c = 0``, every bit scored: ``f(b) * d log P(b)``. This
  is the authors' effective estimator (their control-variate terms cancel in
  the finite difference; their alpha gradient is this times a constant 210,
  which Adam's per-parameter scaling cancels).

Draws use ``p`` clamped to ``[BOUNDARY, 1 - BOUNDARY]`` (the gradient passes the
clamp unchanged), so a probability pushed to 0 or 1 still draws the rare branch
often enough for its estimate to say whether to come back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_EPS = 1e-6
BOUNDARY = 0.01
"""Draws and scores use ``p`` clamped to [BOUNDARY, 1 - BOUNDARY] (straight-through)."""


@dataclass(frozen=True)
class DiscreteDraw:
    """D independent draws over S sub-policies (D = 1 per batch, D = N per sample).

    The uniform noises are kept so that the relaxations can be recomputed with
    a graph to the parameters; ``sub_policy`` and ``bits`` are the hard draws.
    """

    sub_policy: torch.Tensor  # [D] long
    bits: torch.Tensor  # [D, S, 2] float 0/1
    categorical_u: torch.Tensor  # [D, S] uniforms of the Gumbel-max draw
    categorical_v: torch.Tensor  # [D, S] uniforms of the conditional relaxation
    bernoulli_u: torch.Tensor  # [D, S, 2]
    bernoulli_v: torch.Tensor  # [D, S, 2]

    @property
    def count(self) -> int:
        return self.sub_policy.shape[0]

    def applied(self) -> torch.Tensor:
        """``[D, 2]`` bool: whether each slot of the chosen sub-policy applies."""
        index = self.sub_policy.view(-1, 1, 1).expand(-1, 1, self.bits.shape[2])
        return self.bits.gather(1, index).squeeze(1) > 0.5


def clamped_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    """``p`` clamped to [BOUNDARY, 1 - BOUNDARY] in value, with the gradient of the identity.

    A plain clamp would give a probability that reached 0 or 1 no gradient
    ever again, and a clamp to a tiny eps would almost never draw the rare
    branch, whose score term carries the information that p should come back.
    Inside the interval the draw and its estimate are those of ``p`` itself.
    """
    return probabilities + (probabilities.clamp(BOUNDARY, 1 - BOUNDARY) - probabilities).detach()


def _uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    values = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return values.clamp_(_EPS, 1 - _EPS)


def draw(
    alpha: torch.Tensor, probabilities: torch.Tensor, count: int, generator: torch.Generator | None = None
) -> DiscreteDraw:
    """Draw ``count`` sub-policies (Gumbel-max on ``log softmax(alpha)``) and application bits."""
    if alpha.ndim != 1 or probabilities.shape != (alpha.shape[0], 2):
        raise ValueError(
            f"expected alpha [S] and probabilities [S, 2], got {tuple(alpha.shape)} and {tuple(probabilities.shape)}"
        )
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    with torch.no_grad():
        sub_policies = alpha.shape[0]
        categorical_u = _uniform((count, sub_policies), alpha, generator)
        categorical_v = _uniform((count, sub_policies), alpha, generator)
        bernoulli_u = _uniform((count, sub_policies, 2), probabilities, generator)
        bernoulli_v = _uniform((count, sub_policies, 2), probabilities, generator)
        gumbel = alpha.log_softmax(0) - (-categorical_u.log()).log()
        logits = clamped_probabilities(probabilities).logit()
        bits = (logits + bernoulli_u.logit() > 0).to(probabilities.dtype)
        return DiscreteDraw(gumbel.argmax(1), bits, categorical_u, categorical_v, bernoulli_u, bernoulli_v)


def _categorical_relaxations(alpha: torch.Tensor, sample: DiscreteDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """``z`` and ``z~ | b`` (Grathwohl et al. 2018, appendix) in location form ``log theta + Gumbel``."""
    log_theta = alpha.log_softmax(0)
    z = log_theta - (-sample.categorical_u.log()).log()
    chosen = sample.sub_policy.unsqueeze(1)
    log_v = sample.categorical_v.log()
    log_v_chosen = log_v.gather(1, chosen)
    others = -(-log_v / log_theta.exp() - log_v_chosen).log()
    z_tilde = others.scatter(1, chosen, -(-log_v_chosen).log())
    return z, z_tilde


def _bernoulli_relaxations(probabilities: torch.Tensor, sample: DiscreteDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """``z = logit(p) + logit(u)`` and ``z~ | b`` with u redrawn on the side of 1 - p that b says."""
    theta = clamped_probabilities(probabilities)
    logits = theta.logit()
    z = logits + sample.bernoulli_u.logit()
    v = sample.bernoulli_v
    conditional_u = torch.where(sample.bits > 0.5, (1 - theta) + v * theta, v * (1 - theta))
    z_tilde = logits + conditional_u.clamp(_EPS, 1 - _EPS).logit()
    return z, z_tilde


def relaxed_inputs(
    alpha: torch.Tensor, probabilities: torch.Tensor, sample: DiscreteDraw, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The control variate's inputs ``[D, 3S]`` for ``z`` and ``z~``.

    Laid out as the authors' code does: per sub-policy its two tempered Bernoulli
    relaxations ``sigmoid(z / tau)``, then its tempered categorical relaxation
    ``softmax(z / tau)``.
    """
    categorical_z, categorical_z_tilde = _categorical_relaxations(alpha, sample)
    bernoulli_z, bernoulli_z_tilde = _bernoulli_relaxations(probabilities, sample)

    def tempered(bernoulli: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        relaxed = torch.cat(((bernoulli / temperature).sigmoid(), (categorical / temperature).softmax(1).unsqueeze(2)), 2)
        return relaxed.flatten(1)

    return tempered(bernoulli_z, categorical_z), tempered(bernoulli_z_tilde, categorical_z_tilde)


def score(alpha: torch.Tensor, probabilities: torch.Tensor, sample: DiscreteDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """``d log P(b)`` per draw in closed form: ``[D, S]`` for alpha and ``[D, S, 2]`` for p."""
    with torch.no_grad():
        one_hot = torch.zeros(sample.count, alpha.shape[0], dtype=alpha.dtype, device=alpha.device)
        one_hot.scatter_(1, sample.sub_policy.unsqueeze(1), 1.0)  # F.one_hot would synchronise on CUDA
        alpha_score = one_hot - alpha.softmax(0)
        theta = probabilities.clamp(BOUNDARY, 1 - BOUNDARY)
        probability_score = sample.bits / theta - (1 - sample.bits) / (1 - theta)
    return alpha_score, probability_score


class ControlVariate(torch.nn.Module):
    """RELAX's learned control variate ``c_phi``: inputs -> 100 tanh -> 1 (the paper's MLP).

    The relaxations, in [0, 1], are mapped to [-1, 1] first, as in the authors' code.
    """

    def __init__(self, inputs: int, hidden: int = 100) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, relaxed: torch.Tensor) -> torch.Tensor:
        """``[D, inputs]`` -> ``[D]``."""
        return self.layers(relaxed * 2 - 1).squeeze(-1)


@dataclass(frozen=True)
class GradientEstimate:
    """An estimate of ``d E[f(b)] / d (alpha, p)`` (mean over the D draws)."""

    alpha: torch.Tensor  # [S], detached
    probabilities: torch.Tensor  # [S, 2], detached
    variance_loss: torch.Tensor | None = None  # RELAX only: mean of g ** 2, with a graph to the control variate


def _check_values(values: torch.Tensor, sample: DiscreteDraw) -> None:
    if values.shape != (sample.count,):
        raise ValueError(f"expected one value per draw, shape ({sample.count},), got {tuple(values.shape)}")


def relax_gradients(
    values: torch.Tensor,
    alpha: torch.Tensor,
    probabilities: torch.Tensor,
    sample: DiscreteDraw,
    control_variate: ControlVariate,
    temperature: float,
) -> GradientEstimate:
    """RELAX estimate of ``d E[f(b)] / d (alpha, p)`` from ``values = f(b)`` ``[D]`` of the D draws.

    ``alpha`` and ``probabilities`` must require grad. The returned estimate is
    the mean over the draws of each draw's RELAX estimate.
    """
    _check_values(values, sample)
    relaxed, conditional = relaxed_inputs(alpha, probabilities, sample, temperature)
    control, control_conditional = control_variate(relaxed), control_variate(conditional)
    alpha_score, probability_score = score(alpha, probabilities, sample)
    weights = (values.detach().to(control_conditional.dtype) - control_conditional) / sample.count
    correction_alpha, correction_probabilities = torch.autograd.grad(
        (control - control_conditional).mean(), (alpha, probabilities), create_graph=True
    )
    alpha_gradient = weights @ alpha_score + correction_alpha
    probability_gradient = torch.einsum("d,dsk->sk", weights, probability_score) + correction_probabilities
    variance_loss = torch.cat((probability_gradient, alpha_gradient.unsqueeze(1)), dim=1).square().mean()
    return GradientEstimate(alpha_gradient.detach(), probability_gradient.detach(), variance_loss)


def score_function_gradients(
    values: torch.Tensor, alpha: torch.Tensor, probabilities: torch.Tensor, sample: DiscreteDraw
) -> GradientEstimate:
    """``mean_d f(b_d) * d log P(b_d)`` over every bit: RELAX with ``c = 0``, the authors' effective estimator."""
    _check_values(values, sample)
    alpha_score, probability_score = score(alpha, probabilities, sample)
    weights = values.detach().to(alpha_score.dtype) / sample.count
    return GradientEstimate(weights @ alpha_score, torch.einsum("d,dsk->sk", weights, probability_score))


def baseline_gradients(
    values: torch.Tensor,
    baselines: torch.Tensor,
    alpha: torch.Tensor,
    probabilities: torch.Tensor,
    sample: DiscreteDraw,
) -> GradientEstimate:
    """``mean_d (f(b_d) - beta_d) * d log P(s_d, b_d[s_d])``: the chosen sub-policy's bits only, minus a baseline.

    Unbiased when each ``beta_d`` does not depend on draw d (e.g. a
    :class:`RunningBaseline` of earlier steps):
    ``f`` depends only on the chosen sub-policy ``s`` and its two bits, so the
    score of any other bit has mean zero given everything ``f`` sees, and
    dropping it removes noise without changing the expectation.
    """
    _check_values(values, sample)
    if baselines.shape != values.shape:
        raise ValueError(f"expected one baseline per draw, shape {tuple(values.shape)}, got {tuple(baselines.shape)}")
    alpha_score, probability_score = score(alpha, probabilities, sample)
    weights = (values.detach() - baselines.detach()).to(alpha_score.dtype) / sample.count
    chosen = torch.zeros_like(alpha_score).scatter_(1, sample.sub_policy.unsqueeze(1), 1.0)
    probability_gradient = torch.einsum("d,dsk->sk", weights, probability_score * chosen.unsqueeze(2))
    return GradientEstimate(weights @ alpha_score, probability_gradient)


def shrunk_mean(mean: torch.Tensor, variance_of_mean: torch.Tensor) -> torch.Tensor:
    """``mean * mean^2 / (mean^2 + variance_of_mean)``: the multiple of an estimated mean that is the best baseline.

    Subtracting a baseline ``a * m`` (``m`` an estimate of ``E[f]`` independent
    of the draw) from ``f`` changes the variance of ``f * score`` by about
    ``a^2 (mu^2 + var(m)) - 2 a mu^2`` (times ``E[score^2]``), smallest at
    ``a = mu^2 / (mu^2 + var(m))``, with ``m`` standing in for ``mu``: no baseline
    when the mean is lost in its own noise, the whole mean when it is clear.
    """
    square = mean.square()
    return mean * square / (square + variance_of_mean).clamp_min(torch.finfo(mean.dtype).tiny)


class RunningBaseline:
    """The default estimator's baseline: earlier steps' values, exponentially weighted, their mean shrunk.

    It is fixed before the step's draws (it depends only on earlier steps'
    values), so subtracting it keeps the estimate unbiased, with one draw per
    step or one per image. It is the weighted mean ``m`` of earlier steps'
    values (each step's mean over all its draws is one observation, weights
    ``decay ** age``), shrunk by :func:`shrunk_mean` with the variance of ``m``
    as an estimate of their mean (their weighted variance over the effective
    count ``(sum w)^2 / sum w^2``), so it fades to 0 where the values' mean is
    lost in their spread; 0 until two steps were seen. A baseline from the
    step's own other draws (leave-one-out) would be estimated from one batch
    and, with a mean small against its spread, add more noise than it removes.
    The statistics are float64 tensors on the values' device.
    """

    def __init__(self, decay: float = 0.98) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise ValueError(f"decay must be a number in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self._statistics = torch.zeros(4, dtype=torch.float64)  # sum w, sum w^2, weighted mean, weighted squared deviations

    def value(self, like: torch.Tensor) -> torch.Tensor:
        """The baseline, a 0-dim tensor of ``like``'s dtype and device."""
        weight, square_weight, mean, deviations = self._on(like.device).unbind()
        reliable = weight - square_weight / weight.clamp_min(1e-300)  # sum w - sum w^2 / sum w: 0 with one value
        variance_of_mean = deviations / reliable.clamp_min(1e-300) * square_weight / weight.clamp_min(1e-300).square()
        baseline = shrunk_mean(mean, variance_of_mean)
        return torch.where(reliable > 1e-6, baseline, torch.zeros_like(baseline)).to(like.dtype)

    def update(self, values: torch.Tensor) -> None:
        """Add this step's values (their mean over every draw, as one observation)."""
        statistics = self._on(values.device)
        weight, square_weight, mean, deviations = statistics.unbind()
        observation = values.detach().double().mean()
        weight = self.decay * weight + 1
        delta = observation - mean
        new_mean = mean + delta / weight
        deviations = self.decay * deviations + delta * (observation - new_mean)
        self._statistics = torch.stack((weight, self.decay**2 * square_weight + 1, new_mean, deviations))

    def _on(self, device: torch.device) -> torch.Tensor:
        if self._statistics.device != device:
            self._statistics = self._statistics.to(device)
        return self._statistics

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The statistics (a float64 tensor [4]) for a checkpoint."""
        return {"statistics": self._statistics.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        statistics = state.get("statistics") if isinstance(state, dict) else None
        if set(state if isinstance(state, dict) else ()) != {"statistics"} or not (
            isinstance(statistics, torch.Tensor) and statistics.shape == (4,) and statistics.is_floating_point()
        ):
            raise ValueError(f"expected {{'statistics': a float tensor [4]}}, got {state!r:.200}")
        self._statistics = statistics.to(self._statistics.device, torch.float64).clone()
