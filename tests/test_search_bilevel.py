"""The bilevel step: hypergradient against autograd through one SGD step, learning, export and state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from dada_transforms.policy import Policy
from dada_transforms.search import SUB_POLICIES, AugmentationParameters, BilevelSearchStep

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def _images(count: int, seed: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
    return images, torch.randint(0, 4, (count,), generator=generator)


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 12), torch.nn.Tanh(), torch.nn.Linear(12, 4)
    ).double()


def _searcher(model, augmentation, **options) -> BilevelSearchStep:
    settings = dict(lr=0.05, weight_decay=1e-3, mean=MEAN, std=STD, cutout=0, generator=torch.Generator().manual_seed(1))
    settings.update(options)
    return BilevelSearchStep(model, augmentation, **settings)


def _log_probability(alpha, probabilities, discrete) -> torch.Tensor:
    """log P(b) per draw, written out: the chosen sub-policy and every Bernoulli bit."""
    bits = discrete.bits
    categorical = alpha.log_softmax(0)[discrete.sub_policy]
    bernoulli = (bits * probabilities.log() + (1 - bits) * (1 - probabilities).log()).sum((1, 2))
    return categorical + bernoulli


def _autograd_hypergradient(searcher, augmentation, sample, train, val, sampling, magnitude_grad):
    """d L_val(w - xi (grad_w L_train(w, theta) + momentum buffer + wd w)) / d theta by autograd.

    L_train is the score-function surrogate of the sampled batch: its value is the
    training loss and its theta-gradient is loss * d log P(b) (plus the magnitude path).
    """
    model = searcher.model
    group = searcher.weight_optimizer.param_groups[0]
    xi, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
    weights = {name: parameter.detach().clone().requires_grad_() for name, parameter in model.named_parameters()}
    alpha, probabilities, magnitudes = augmentation.architecture_parameters()
    batch = augmentation.augment(train[0], sample, magnitude_grad)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    inputs = ((batch.images - mean) / std).double() + batch.straight_through.double().view(-1, 1, 1, 1)
    losses = F.cross_entropy(functional_call(model, weights, inputs), train[1], reduction="none")
    log_probability = _log_probability(alpha, probabilities, sample.discrete).double()
    weight = (log_probability - log_probability.detach()).exp()
    if sampling == "per-sample":
        surrogate = (losses * weight).mean()
    else:
        surrogate = losses.mean() * weight.squeeze(0)
    gradients = torch.autograd.grad(surrogate, list(weights.values()), create_graph=True)
    unrolled = {}
    for (name, value), gradient, parameter in zip(weights.items(), gradients, model.parameters()):
        buffer = searcher.weight_optimizer.state[parameter]["momentum_buffer"]
        unrolled[name] = value - xi * (gradient + weight_decay * value + momentum * buffer)
    val_inputs = ((val[0].double() / 255 - mean) / std).double()
    val_loss = F.cross_entropy(functional_call(model, unrolled, val_inputs), val[1])
    return torch.autograd.grad(val_loss, (alpha, probabilities, magnitudes)), xi


@pytest.mark.parametrize(
    "sampling, magnitude_grad, with_xi",
    [
        ("per-sample", "straight-through", True),
        ("per-batch", "straight-through", False),
        ("per-sample", "autodiff", False),
    ],
)
def test_unrolled_hypergradient_matches_autograd_through_one_sgd_step(sampling, magnitude_grad, with_xi):
    augmentation = AugmentationParameters().double()
    with torch.no_grad():
        augmentation.alpha.copy_(torch.randn(105, generator=torch.Generator().manual_seed(3)))
        augmentation.probabilities.uniform_(0.3, 0.95)
        augmentation.magnitudes.uniform_(0.0, 1.0)
        for parameter in augmentation.control_variate_parameters():
            parameter.zero_()  # c = 0: the estimate is then exactly the score-function term
    searcher = _searcher(
        _mlp(), augmentation, sampling=sampling, magnitude_grad=magnitude_grad, hypergradient_xi=with_xi,
        lr=0.2, weight_decay=0.05, estimator="score-function",
    )
    train, val = _images(16, seed=0), _images(16, seed=1)
    searcher.step(*train, *val)  # fills the momentum buffers, which w' must include
    with torch.no_grad():
        for parameter in augmentation.control_variate_parameters():
            parameter.zero_()
    sample = augmentation.sample(16, sampling == "per-sample", torch.Generator().manual_seed(4))
    ours = searcher.architecture_gradients(*train, *val, sample)
    reference, xi = _autograd_hypergradient(searcher, augmentation, sample, train, val, sampling, magnitude_grad)
    factor = 1.0 if with_xi else 1.0 / xi
    for name, expected in zip(("alpha", "probabilities", "magnitudes"), reference):
        assert expected.abs().max() > 0, name
        # the finite difference (radius 0.01) agrees with autograd to ~1e-4 of the largest entry
        tolerance = 5e-4 * expected.abs().max().item() * factor
        torch.testing.assert_close(ours[name], expected * factor, rtol=1e-3, atol=tolerance, msg=name)


def _objective_values(searcher, augmentation, sample, train, val) -> torch.Tensor:
    """Per image ``F_i = -grad_w l_i(w) . grad_w' L_val(w')`` by autograd (what the finite difference estimates)."""
    model = searcher.model
    group = searcher.weight_optimizer.param_groups[0]
    xi, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
    weights = {name: parameter.detach().clone().requires_grad_() for name, parameter in model.named_parameters()}
    batch = augmentation.augment(train[0], sample, "straight-through")
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    inputs = ((batch.images.detach() - mean) / std).double()
    losses = F.cross_entropy(functional_call(model, weights, inputs), train[1], reduction="none")
    gradients = torch.autograd.grad(losses.mean(), list(weights.values()), retain_graph=True)
    unrolled = {}
    for (name, value), gradient, parameter in zip(weights.items(), gradients, model.parameters()):
        buffer = searcher.weight_optimizer.state[parameter]["momentum_buffer"]
        unrolled[name] = (value - xi * (gradient + weight_decay * value + momentum * buffer)).detach().requires_grad_()
    val_inputs = ((val[0].double() / 255 - mean) / std).double()
    val_loss = F.cross_entropy(functional_call(model, unrolled, val_inputs), val[1])
    direction = torch.autograd.grad(val_loss, list(unrolled.values()))
    values = []
    for loss in losses:
        per_image = torch.autograd.grad(loss, list(weights.values()), retain_graph=True)
        values.append(-sum((g * v).sum() for g, v in zip(per_image, direction)))
    return torch.stack(values)


def _relaxations(alpha, probabilities, discrete, temperature):
    """The control variate's inputs for z and z~ (Grathwohl et al. 2018), written out per draw."""
    theta = alpha.softmax(0)
    chosen = discrete.sub_policy
    z = theta.log() - (-discrete.categorical_u.log()).log()
    log_v = discrete.categorical_v.log()
    log_v_chosen = log_v.gather(1, chosen.unsqueeze(1))
    z_tilde = -(-log_v / theta - log_v_chosen).log()
    z_tilde = z_tilde.scatter(1, chosen.unsqueeze(1), -(-log_v_chosen).log())
    logits = probabilities.log() - (1 - probabilities).log()
    bits, u, v = discrete.bits, discrete.bernoulli_u, discrete.bernoulli_v
    bernoulli_z = logits + u.log() - (1 - u).log()
    u_prime = bits * (1 - probabilities + v * probabilities) + (1 - bits) * v * (1 - probabilities)
    bernoulli_z_tilde = logits + u_prime.log() - (1 - u_prime).log()

    def inputs(bernoulli, categorical):
        parts = [(bernoulli / temperature).sigmoid(), (categorical / temperature).softmax(1).unsqueeze(2)]
        return torch.cat(parts, 2).flatten(1)

    return inputs(bernoulli_z, z), inputs(bernoulli_z_tilde, z_tilde)


@pytest.mark.parametrize("estimator", ["relax", "baseline"])
@pytest.mark.parametrize("sampling", ["per-sample", "per-batch"])
def test_estimators_match_autograd_with_a_nonzero_control_variate_or_baseline(estimator, sampling):
    augmentation = AugmentationParameters().double()
    with torch.no_grad():
        augmentation.alpha.copy_(torch.randn(105, generator=torch.Generator().manual_seed(3)))
        augmentation.probabilities.uniform_(0.3, 0.95)
        augmentation.magnitudes.uniform_(0.0, 1.0)
    searcher = _searcher(_mlp(), augmentation, sampling=sampling, estimator=estimator, lr=0.2, weight_decay=0.05)
    train, val = _images(16, seed=0), _images(16, seed=1)
    searcher.step(*train, *val)  # momentum buffers; relax: trains phi
    with torch.no_grad():
        for parameter in augmentation.control_variate_parameters():
            parameter.mul_(3.0)  # c of the order of F, so that a wrong control-variate term shows
    sample = augmentation.sample(16, sampling == "per-sample", torch.Generator().manual_seed(4))
    values = _objective_values(searcher, augmentation, sample, train, val)
    if sampling == "per-batch":
        values = values.mean().view(1)
    # the running baseline after some earlier steps: total weight, total squared weight, weighted mean, deviations
    mean = 1.5 * values.abs().mean().item()
    weight, square_weight, deviations = 5.0, 3.0, mean**2
    searcher.running_baseline.load_state_dict({"statistics": torch.tensor([weight, square_weight, mean, deviations])})
    ours = searcher.architecture_gradients(*train, *val, sample)

    alpha, probabilities = augmentation.alpha, augmentation.probabilities
    discrete = sample.discrete
    if estimator == "relax":
        relaxed, conditional = _relaxations(alpha, probabilities, discrete, augmentation.temperature)
        control, control_conditional = augmentation.control_variate(relaxed), augmentation.control_variate(conditional)
        assert control_conditional.abs().mean() > 0.5 * values.abs().mean()
        log_probability = _log_probability(alpha, probabilities, discrete)
        surrogate = ((values - control_conditional.detach()) * log_probability + control - control_conditional).mean()
    else:  # one baseline for every draw: the earlier steps' weighted mean m times m^2 / (m^2 + var(m))
        variance_of_mean = deviations / (weight - square_weight / weight) * square_weight / weight**2
        baseline = mean * mean**2 / (mean**2 + variance_of_mean)
        assert abs(baseline) > 0.5 * values.abs().mean()
        chosen = discrete.sub_policy
        bits = discrete.bits[torch.arange(discrete.count), chosen]
        p = probabilities[chosen]
        log_probability = alpha.log_softmax(0)[chosen] + (bits * p.log() + (1 - bits) * (1 - p).log()).sum(1)
        surrogate = ((values - baseline) * log_probability).mean()
    reference = torch.autograd.grad(surrogate, (alpha, probabilities))
    for name, expected in zip(("alpha", "probabilities"), reference):
        tolerance = 5e-4 * expected.abs().max().item()
        torch.testing.assert_close(ours[name], expected, rtol=1e-3, atol=tolerance, msg=name)


def test_finite_difference_uses_the_same_dropout_masks_at_w_plus_and_w_minus():
    train, val = _images(16, seed=0), _images(16, seed=1)
    norms = {}
    for rate in (0.0, 0.3):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(192, 32), torch.nn.Tanh(), torch.nn.Dropout(rate), torch.nn.Linear(32, 4)
        ).double()
        augmentation = AugmentationParameters().double()
        searcher = _searcher(model, augmentation, sampling="per-sample")
        sample = augmentation.sample(16, True, torch.Generator().manual_seed(4))
        gradients = searcher.architecture_gradients(*train, *val, sample)
        norms[rate] = gradients["magnitudes"].norm().item(), gradients["alpha"].norm().item()
    # different masks would add (loss noise) / (2 eps), tens of times the signal here
    for with_dropout, without in zip(norms[0.3], norms[0.0]):
        assert with_dropout < 3 * without


class _PrecisionRecorder(torch.nn.Module):
    """A tiny model that records the float32 convolution precision setting at each forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
        self.seen: list[str] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.backends.cudnn.conv.fp32_precision)
        return self.layers(images)


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "conv"), reason="per-operator precision settings need torch >= 2.9")
def test_finite_difference_runs_without_tf32_and_restores_the_setting():
    model = _PrecisionRecorder()
    before = torch.backends.cudnn.conv.fp32_precision
    searcher = _searcher(model, AugmentationParameters())
    searcher.architecture_gradients(*_images(4, seed=0), *_images(4, seed=1))
    # forward passes: real at w, validation at w', then w+ and w-
    assert model.seen == [before, before, "ieee", "ieee"]
    assert torch.backends.cudnn.conv.fp32_precision == before


class _MatmulPrecisionRecorder(_PrecisionRecorder):
    """Records the CPU (oneDNN) and CUDA float32 matmul precision settings at each forward pass."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.backends.mkldnn.matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision))
        return self.layers(images)


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "conv"), reason="per-operator precision settings need torch >= 2.9")
def test_finite_difference_is_full_float32_whatever_matmul_precision_the_caller_set():
    """'medium' makes oneDNN's float32 matmuls bfloat16 on the CPU: the finite difference must not see it."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        caller = (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
        model = _MatmulPrecisionRecorder()
        _searcher(model, AugmentationParameters()).architecture_gradients(*_images(4, seed=0), *_images(4, seed=1))
        assert model.seen == [caller, caller, ("ieee", "ieee"), ("ieee", "ieee")]
        assert (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == caller
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("magnitude", [0.3, 0.0])  # 0: a magnitude at its boundary keeps its gradient
def test_autodiff_magnitude_gradient_of_brightness_is_the_image(magnitude):
    augmentation = AugmentationParameters().double()
    index = SUB_POLICIES.index(("Brightness", "Sharpness"))
    with torch.no_grad():
        augmentation.alpha.fill_(-50).data[index] = 50
        augmentation.probabilities.data[index] = torch.tensor([1.0, 0.0])
        augmentation.magnitudes.data[index, 0] = magnitude  # factor 0.64 or 0.1: nothing clips
    images, _ = _images(4, seed=2)
    sample = augmentation.sample(4, per_sample=True, generator=torch.Generator().manual_seed(1))
    # p = 1 and 0 are drawn as 0.99 and 0.01 (boundaries are not absorbing): this seed applies Brightness alone
    assert sample.per_image()[1].tolist() == [[True, False]] * 4
    batch = augmentation.augment(images, sample, "autodiff")
    (gradient,) = torch.autograd.grad(batch.images.sum(), augmentation.magnitudes)
    # Brightness: factor = 0.1 + 1.8 m, output = factor * x, so d sum / d m = 1.8 * sum(x)
    expected = 1.8 * images.double().sum() / 255
    torch.testing.assert_close(gradient[index, 0], expected, rtol=1e-5, atol=0)
    assert gradient.count_nonzero() == 1
    exact = (images.double() * (0.1 + 1.8 * magnitude)).floor() / 255  # values stay PIL's (truncated), within float rounding
    torch.testing.assert_close(batch.images.detach().double(), exact, rtol=0, atol=1.01 / 255)


@pytest.mark.parametrize(
    "sampling, estimator", [("per-batch", "baseline"), ("per-sample", "baseline"), ("per-batch", "relax")]
)
def test_probabilities_and_magnitudes_move_and_stay_in_the_unit_interval(sampling, estimator):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 4),
    )
    augmentation = AugmentationParameters()
    initial = {name: value.clone() for name, value in augmentation.tensors().items()}
    searcher = _searcher(model, augmentation, sampling=sampling, cutout=4, lr=0.1, estimator=estimator)
    train, val = _images(16, seed=0), _images(16, seed=1)
    for _ in range(4):
        stats = searcher.step(*train, *val)
    assert stats.loss.ndim == 0 and stats.accuracy.ndim == 0 and 0 <= stats.accuracy <= 1
    for name in ("alpha", "probabilities", "magnitudes"):
        moved = (augmentation.tensors()[name] - initial[name]).abs()
        assert moved.max() > 1e-3, name
    assert (augmentation.probabilities.min() >= 0) and (augmentation.probabilities.max() <= 1)
    assert (augmentation.magnitudes.min() >= 0) and (augmentation.magnitudes.max() <= 1)
    phi_moved = not torch.equal(
        augmentation.tensors()["control_variate.layers.0.weight"], initial["control_variate.layers.0.weight"]
    )
    assert phi_moved == (estimator == "relax")  # only RELAX trains its control variate


def test_first_order_leaves_the_augmentation_alone_and_virtual_steps_keep_batchnorm_statistics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 4),
    )
    augmentation = AugmentationParameters()
    train, val = _images(8, seed=0), _images(8, seed=1)
    searcher = _searcher(model, augmentation)
    running_mean = model[1].running_mean.clone()
    searcher.architecture_gradients(*train, *val)
    assert torch.equal(model[1].running_mean, running_mean)
    first_order = _searcher(model, augmentation, unrolled=False)
    before = augmentation.tensors()
    weight = model[0].weight.detach().clone()
    first_order.step(*train, *val)
    assert all(torch.equal(value, augmentation.tensors()[name]) for name, value in before.items())
    assert not torch.equal(model[0].weight, weight)
    assert not torch.equal(model[1].running_mean, running_mean)  # the real forward pass does update them


def test_to_policy_keeps_the_heaviest_sub_policies_with_clamped_values():
    augmentation = AugmentationParameters()
    with torch.no_grad():
        augmentation.alpha[7] = 3.0
        augmentation.alpha[50] = 2.0
        augmentation.probabilities[7] = torch.tensor([1.3, 0.25])
        augmentation.magnitudes[50] = torch.tensor([-0.2, 0.75])
    policy = augmentation.to_policy(top_k=3, name="found", metadata={"epochs": 2})
    assert isinstance(policy, Policy) and len(policy) == 3 and policy.name == "found"
    first, second = policy[0], policy[1]
    assert (first[0].op, first[1].op) == SUB_POLICIES[7] and (first[0].probability, first[1].probability) == (1.0, 0.25)
    assert (second[0].op, second[1].op) == SUB_POLICIES[50] and (second[0].magnitude, second[1].magnitude) == (0.0, 0.75)
    weights = augmentation.sub_policy_weights()
    assert policy.metadata["epochs"] == 2
    assert policy.metadata["sub_policy_weights"] == pytest.approx([weights[7].item(), weights[50].item(), weights[0].item()])
    with pytest.raises(ValueError, match="top_k"):
        augmentation.to_policy(top_k=0)


def test_tensors_and_optimizer_state_round_trip():
    source = AugmentationParameters()
    model = _mlp()
    searcher = _searcher(model, source)
    train, val = _images(8, seed=0), _images(8, seed=1)
    searcher.step(*train, *val)
    tensors = source.tensors()
    assert all(value.is_contiguous() and value.device.type == "cpu" for value in tensors.values())
    target = AugmentationParameters()
    target.load_tensors(tensors)
    assert all(torch.equal(value, target.tensors()[name]) for name, value in tensors.items())
    resumed = _searcher(model, target)
    resumed.load_state_dict(searcher.state_dict())
    assert resumed.arch_optimizer.state_dict()["state"][0]["step"] == 1
    with pytest.raises(ValueError, match="alpha"):
        target.load_tensors({**tensors, "alpha": torch.zeros(3)})
    with pytest.raises(ValueError, match="missing"):
        target.load_tensors({"alpha": tensors["alpha"]})


def test_bad_settings_raise_value_errors():
    model, augmentation = _mlp(), AugmentationParameters()
    with pytest.raises(ValueError, match="sampling"):
        _searcher(model, augmentation, sampling="per-epoch")
    with pytest.raises(ValueError, match="magnitude_grad"):
        _searcher(model, augmentation, magnitude_grad="reinforce")
    with pytest.raises(ValueError, match="cutout"):
        _searcher(model, augmentation, cutout=-1)
    with pytest.raises(ValueError, match="temperature"):
        AugmentationParameters(temperature=0)
    searcher = _searcher(model, augmentation)
    images, labels = _images(4, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        searcher.step(images.float(), labels, images, labels)
    with pytest.raises(ValueError, match="labels"):
        searcher.step(images, labels[:3], images, labels)
