"""The compact search space (ours): its draws, its augmentation against PIL, its score and its exported policy."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from scipy.stats import binomtest, chisquare

from dada_transforms import DADA, Policy
from dada_transforms.fill import CUTOUT_FILL
from dada_transforms.functional_pil import PilOptions
from dada_transforms.ops import OPERATION_NAMES, OPERATIONS
from dada_transforms.search.compact import CompactAugmentation, CompactDraw
from dada_transforms.search.distributed import Processes

LOGITS = torch.linspace(-1.5, 1.5, 15)


def _compact(probability: float = 0.3, operations: int = 2) -> CompactAugmentation:
    compact = CompactAugmentation(operations)
    with torch.no_grad():
        compact.logits.copy_(LOGITS)
        compact.probability.fill_(probability)
        compact.magnitudes.copy_(torch.linspace(0.1, 0.9, 15))
    return compact


def _assert_frequencies(counts: list[int], probabilities: list[float]) -> None:
    total = sum(counts)
    assert chisquare(counts, [total * p for p in probabilities]).pvalue > 1e-3, counts  # fixed seeds


def test_draws_each_slot_from_the_softmax_and_applies_with_the_probability():
    compact = _compact()
    sample = compact.sample(2500, 4, torch.Generator().manual_seed(0))
    assert sample.operations.shape == (10_000, 2) and sample.cutout_centers.shape == (10_000, 2, 2)
    weights = LOGITS.softmax(0).tolist()
    for slot in range(2):
        _assert_frequencies(torch.bincount(sample.operations[:, slot], minlength=15).tolist(), weights)
    applied = int(sample.applied.sum())
    assert binomtest(applied, sample.applied.numel(), 0.3).pvalue > 1e-3
    assert set(sample.signs.unique().tolist()) == {-1.0, 1.0}
    # the K draws of an image are independent: repeats of the first slot's operation as often as chance says
    repeats = (sample.operations[:, 0].view(2500, 4)[:, 0] == sample.operations[:, 0].view(2500, 4)[:, 1]).sum().item()
    assert binomtest(repeats, 2500, sum(w * w for w in weights)).pvalue > 1e-3


def test_each_process_keeps_its_images_draws_of_the_global_batch():
    compact = _compact()
    whole = compact.sample(6, 3, torch.Generator().manual_seed(4))
    for rank in range(2):
        part = compact.sample(3, 3, torch.Generator().manual_seed(4), Processes(rank=rank, world_size=2))
        rows = slice(9 * rank, 9 * rank + 9)
        assert torch.equal(part.operations, whole.operations[rows]) and torch.equal(part.applied, whole.applied[rows])
        assert torch.equal(part.cutout_centers, whole.cutout_centers[rows])


def _pil_reference(image: Image.Image, operations, applied, magnitudes, signs, centres) -> torch.Tensor:
    """PIL's kernels applied in turn, nearest resampling, black fill and the Cutout fill of the search."""
    for op, used, magnitude, sign, centre in zip(operations, applied, magnitudes, signs, centres):
        if not used:
            continue
        spec = OPERATIONS[OPERATION_NAMES[op]]
        argument = spec.low + magnitude * (spec.high - spec.low)
        argument = argument * sign if spec.mirror else argument
        image = spec.pil(image, argument, PilOptions(None, CUTOUT_FILL, Image.Resampling.NEAREST, tuple(centre)))
    return TF.pil_to_tensor(image)


@pytest.mark.parametrize("magnitude_grad", ["autodiff", "straight-through"])
def test_augmented_values_are_pils(make_image, magnitude_grad):
    compact = _compact(probability=0.8)
    images = torch.stack([TF.pil_to_tensor(make_image(20, 16, seed=seed)) for seed in range(5)])
    sample = compact.sample(5, 6, torch.Generator().manual_seed(2))
    result = compact.augment(images, sample, magnitude_grad).images.detach().mul(255).round().to(torch.uint8)
    assert result.shape == (30, 3, 16, 20)
    # the search's magnitudes are float32: the reference gets the same arguments
    spans = torch.tensor([OPERATIONS[name].high - OPERATIONS[name].low for name in OPERATION_NAMES])
    lows = torch.tensor([OPERATIONS[name].low for name in OPERATION_NAMES])
    for row in range(30):
        image = TF.to_pil_image(images[row // 6])
        ops = sample.operations[row].tolist()
        magnitudes = ((lows[ops] + compact.policy_magnitudes().detach()[ops] * spans[ops] - lows[ops]) / spans[ops].clamp_min(1e-9))
        expected = _pil_reference(
            image, ops, sample.applied[row].tolist(), magnitudes.tolist(), sample.signs[row].tolist(),
            sample.cutout_centers[row].tolist(),
        )
        assert torch.equal(result[row], expected), (row, [OPERATION_NAMES[op] for op in ops], sample.applied[row])


def test_autodiff_gives_each_differentiable_operation_its_own_gradient():
    """Brightness's magnitude gets d(sum)/dm = 1.8 * sum(x); Invert's (not differentiable) goes straight through."""
    compact = CompactAugmentation(operations=1).double()
    images = torch.randint(0, 120, (3, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    brightness, invert = OPERATION_NAMES.index("Brightness"), OPERATION_NAMES.index("Invert")
    operations = torch.tensor([[brightness], [invert], [brightness]])
    sample = CompactDraw(operations, torch.tensor([[True], [True], [False]]), torch.ones(3, 1), torch.zeros(3, 1, 2), 1)
    batch = compact.augment(images, sample, "autodiff")
    (gradient,) = torch.autograd.grad(batch.images.sum() + batch.straight_through.sum(), compact.magnitudes)
    expected = torch.zeros(15, dtype=torch.float64)
    expected[brightness] = 1.8 * images[0].double().sum() / 255
    expected[invert] = 1.0  # straight-through: d(input)/dm = 1 per applied image
    torch.testing.assert_close(gradient, expected, rtol=1e-5, atol=1e-9)


def test_score_is_the_gradient_of_the_log_probability_of_the_draw():
    compact = _compact(probability=0.4).double()
    sample = compact.sample(4, 2, torch.Generator().manual_seed(3))
    logits_score, probability_score = compact.score(sample)
    for row in range(sample.count):
        applied = sample.applied[row]
        log_p = (compact.logits.log_softmax(0)[sample.operations[row]] * applied).sum()
        log_p = log_p + (applied * compact.probability.log() + (~applied) * (1 - compact.probability).log()).sum()
        grad_logits, grad_p = torch.autograd.grad(log_p, (compact.logits, compact.probability))
        torch.testing.assert_close(logits_score[row], grad_logits)
        torch.testing.assert_close(probability_score[row], grad_p)


def test_weighted_export_reproduces_the_compact_distribution():
    compact = _compact(probability=0.35)
    policy = compact.to_policy(top_k=225, name="compact", weighted=True)
    assert len(policy) == 225 and all(len(sub_policy) == 2 for sub_policy in policy)
    reloaded = Policy.from_json(policy.to_json())
    assert reloaded == policy
    drawn = DADA(reloaded, generator=torch.Generator().manual_seed(0)).draw_params(20_000)
    weights = LOGITS.softmax(0).tolist()
    for slot in range(2):  # the operation of each slot, drawn by the library, has the learned frequencies
        _assert_frequencies(torch.bincount(drawn.operations[:, slot], minlength=15).tolist(), weights)
    pairs = torch.bincount(drawn.operations[:, 0] * 15 + drawn.operations[:, 1], minlength=225).tolist()
    _assert_frequencies(pairs, [a * b for a, b in itertools.product(weights, weights)])
    assert binomtest(int(drawn.applied.sum()), drawn.applied.numel(), 0.35).pvalue > 1e-3
    magnitudes = compact.magnitudes.detach()
    for sub_policy in policy:  # every slot carries its operation's learned magnitude and the one probability
        for operation in sub_policy:
            learned = magnitudes[OPERATION_NAMES.index(operation.op)].item()
            expected = 0.5 + learned / 2 if OPERATIONS[operation.op].mirror else learned  # a strength: 0 = identity
            assert operation.magnitude == pytest.approx(expected)
            assert operation.probability == pytest.approx(0.35)


def test_top_k_export_keeps_the_heaviest_pairs_uniformly():
    policy = _compact().to_policy(top_k=3, name="top", metadata={"note": 1})
    assert policy.sampling_weights is None and policy.metadata["note"] == 1
    heaviest = OPERATION_NAMES[14]
    assert [[operation.op for operation in sub_policy] for sub_policy in policy] == [
        [heaviest, heaviest], [OPERATION_NAMES[13], heaviest], [heaviest, OPERATION_NAMES[13]]
    ]  # ties in the order of the tuples (itertools.product)
    weights = LOGITS.softmax(0)
    assert policy.metadata["sub_policy_weights"][0] == pytest.approx((weights[14] ** 2).item())


def test_one_operation_per_image_exports_fifteen_sub_policies():
    policy = _compact(operations=1).to_policy(weighted=True)
    assert [sub_policy[0].op for sub_policy in policy] == list(OPERATION_NAMES)
    assert policy.sampling_probabilities == pytest.approx(LOGITS.softmax(0).tolist())


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match=r"operations must be an integer in \[1, 2\].*got 3"):
        CompactAugmentation(3)
    compact = CompactAugmentation()
    with pytest.raises(ValueError, match="draws must be an integer >= 1, got 0"):
        compact.sample(4, 0)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1, got 0"):
        compact.to_policy(top_k=0)
    assert len(compact.to_policy(top_k=300)) == 225
    with pytest.raises(ValueError, match="the draw has 8 rows for 2 draws per image"):
        compact.augment(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), compact.sample(4, 2))


def test_tensors_round_trip_and_are_checked():
    compact, other = _compact(), CompactAugmentation()
    other.load_tensors(compact.tensors())
    assert all(torch.equal(a, b) for a, b in zip(compact.tensors().values(), other.tensors().values()))
    with pytest.raises(ValueError, match="compact tensor 'logits' has shape"):
        other.load_tensors({**compact.tensors(), "logits": torch.zeros(3)})


# -- the step ---------------------------------------------------------------------


def _step(objective: str = "unrolled", parameters: CompactAugmentation | None = None, **options):
    from dada_transforms.search.compact_step import CompactSearchStep

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3),
    )
    settings = dict(draws=3, objective=objective, lr=0.1, weight_decay=1e-3, mean=(0.5,) * 3, std=(0.25,) * 3,
                    cutout=4, arch_lr=0.05, generator=torch.Generator().manual_seed(1))
    return CompactSearchStep(model, parameters or CompactAugmentation(), **{**settings, **options})


def _batch(seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (2, 4, 3, 8, 8), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 3, (2, 4), generator=generator)
    return images[0], labels[0], images[1], labels[1]


def test_leave_one_out_estimate_is_the_gradient_of_the_expected_value():
    """F = number of applied Inverts: E[F] = N p w, so dE/dlogit_j = N p w (1[j = Invert] - w_j) and dE/dp = N w."""
    parameters = _compact(probability=0.4)
    step = _step(parameters=parameters, draws=2)
    sample = parameters.sample(40_000, 2, torch.Generator().manual_seed(0))
    invert = OPERATION_NAMES.index("Invert")
    values = ((sample.operations == invert) & sample.applied).sum(1).float()
    logits_gradient, probability_gradient = step.policy_gradients(values, sample)
    weights = LOGITS.softmax(0)
    expected = 2 * 0.4 * weights[invert] * (torch.eye(15)[invert] - weights)
    torch.testing.assert_close(logits_gradient, expected, rtol=0, atol=0.004)
    torch.testing.assert_close(probability_gradient, 2 * weights[invert], rtol=0, atol=0.01)


def test_values_that_only_depend_on_the_image_give_no_policy_gradient():
    parameters = _compact()
    step = _step(parameters=parameters, draws=4)
    sample = parameters.sample(50, 4, torch.Generator().manual_seed(0))
    per_image = torch.randn(50, generator=torch.Generator().manual_seed(1)).repeat_interleave(4)
    for gradient in step.policy_gradients(per_image, sample):
        torch.testing.assert_close(gradient, torch.zeros_like(gradient), rtol=0, atol=1e-6)


@pytest.mark.parametrize("objective", ["unrolled", "adversarial"])
def test_step_moves_every_parameter_and_resumes_exactly(objective):
    straight = _step(objective)
    for seed in (1, 2):
        stats = straight.step(*_batch(seed))
    assert stats.values.shape == (12,) and stats.loss.ndim == 0
    saved = (straight.state_dict(), straight.parameters.tensors(), straight.model.state_dict(), straight.generator.get_state())
    saved = copy.deepcopy(saved)
    for seed in (3, 4):
        straight.step(*_batch(seed))
    resumed = _step(objective)
    resumed.load_state_dict(saved[0])
    resumed.parameters.load_tensors(saved[1])
    resumed.model.load_state_dict(saved[2])
    resumed.generator.set_state(saved[3])
    for seed in (3, 4):
        resumed.step(*_batch(seed))
    for key, value in straight.parameters.tensors().items():
        assert torch.equal(resumed.parameters.tensors()[key], value), key
        assert (value - (0.5 if key != "logits" else 0.0)).abs().max() > 1e-4, key  # it moved
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    if objective == "adversarial":
        for key, value in straight.teacher.state_dict().items():
            assert torch.equal(resumed.teacher.state_dict()[key], value), key


def test_step_refuses_bad_settings_and_states():
    with pytest.raises(ValueError, match="draws must be an integer >= 2 .*got 1"):
        _step(draws=1)
    with pytest.raises(ValueError, match=r"objective must be one of \('unrolled', 'adversarial'\), got 'greedy'"):
        _step("greedy")
    with pytest.raises(ValueError, match="expected a dict with"):
        _step("unrolled").load_state_dict(_step("adversarial").state_dict())


def test_a_mirrored_operations_magnitude_is_its_strength():
    """Strength 0 leaves the image as it is, 1 reaches the end of the range: Rotate's strength 0.5 is 15 degrees."""
    compact = CompactAugmentation(operations=1)
    rotate = OPERATION_NAMES.index("Rotate")
    with torch.no_grad():
        compact.magnitudes.zero_()
        compact.magnitudes[rotate] = 0.5
    exported = compact.to_policy(top_k=15, weighted=True)
    by_op = {sub_policy[0].op: sub_policy[0] for sub_policy in exported}
    assert OPERATIONS["Rotate"].low + by_op["Rotate"].magnitude * (OPERATIONS["Rotate"].high - OPERATIONS["Rotate"].low) == pytest.approx(15.0)
    assert by_op["ShearX"].magnitude == pytest.approx(0.5)  # strength 0: the format's identity of a mirrored op
    assert by_op["Solarize"].magnitude == pytest.approx(0.0)  # not mirrored: the format's own magnitude


def test_a_weighted_export_keeps_the_top_k_heaviest_tuples_with_their_weights():
    compact = CompactAugmentation(operations=2)
    with torch.no_grad():
        compact.logits.copy_(torch.linspace(-1.0, 2.0, 15))
    exported = compact.to_policy(top_k=10, weighted=True)
    weights = compact.logits.detach().double().softmax(0)
    pair_weight = {(OPERATION_NAMES[a], OPERATION_NAMES[b]): (weights[a] * weights[b]).item()
                   for a, b in itertools.product(range(15), repeat=2)}
    kept = [(first.op, second.op) for first, second in exported]
    assert len(kept) == 10
    assert sorted(pair_weight.values(), reverse=True)[9] == pytest.approx(min(pair_weight[pair] for pair in kept))
    total = sum(pair_weight[pair] for pair in kept)
    for pair, sampling in zip(kept, exported.sampling_weights):
        assert sampling / sum(exported.sampling_weights) == pytest.approx(pair_weight[pair] / total)
