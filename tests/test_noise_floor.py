"""The noise floor: what leaves it on data with a known answer, nothing when the objective is noise.

The known answer is the upright/inverted search of ``test_search_learns.py``:
search-train images upright, search-val images inverted, so only Invert helps.
The same search with its objective values replaced by noise (and the
magnitudes' gradient given random signs) learns nothing; none of its
parameters may leave the band of its null pass.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from dada_transforms.search import SUB_POLICIES, AugmentationParameters, BilevelSearchStep
from dada_transforms.search.loop import search
from dada_transforms.search.noise_band import outside_line
from dada_transforms.search.noise_floor import NoiseFloor, null_pass_floor, objective_summary

BATCH = 32
STEPS = 40
STEPS_PER_EPOCH = 10
ARCH_LR = 0.02
WITH_INVERT = torch.tensor(["Invert" in sub_policy for sub_policy in SUB_POLICIES])
INVERT_SLOTS = torch.tensor([[op == "Invert" for op in sub_policy] for sub_policy in SUB_POLICIES])


def _search(noise: bool, half_bright_images) -> tuple[AugmentationParameters, NoiseFloor]:
    """The upright/inverted search (its objective replaced by noise if asked) and its noise floor."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    augmentation = AugmentationParameters()
    searcher = BilevelSearchStep(
        model, augmentation, lr=0.05, weight_decay=0.0, mean=(0.5,) * 3, std=(0.25,) * 3, cutout=0,
        sampling="per-sample", arch_lr=ARCH_LR, generator=torch.Generator().manual_seed(1),
    )
    fed = []  # the objective values the estimator saw
    if noise:
        randomness = torch.Generator().manual_seed(2)
        estimate, architecture_step = searcher._estimate, searcher._architecture_step

        def noisy_estimate(values, sample):
            fed.append(torch.randn(values.shape, generator=randomness) * 0.1)
            return estimate(fed[-1], sample)

        def sign_randomised_step(gradients):
            signs = torch.randint(0, 2, gradients["magnitudes"].shape, generator=randomness) * 2 - 1
            return architecture_step({**gradients, "magnitudes": gradients["magnitudes"] * signs})

        searcher._estimate, searcher._architecture_step = noisy_estimate, sign_randomised_step
    train_images, train_labels = half_bright_images(BATCH * STEPS, seed=0)
    val_images, val_labels = half_bright_images(BATCH * STEPS, seed=1)
    val_images = 255 - val_images
    for start in range(0, BATCH * STEPS, BATCH):
        part = slice(start, start + BATCH)
        stats = searcher.step(train_images[part], train_labels[part], val_images[part], val_labels[part])
        if not noise:
            fed.append(stats.values)
    epochs = [objective_summary(torch.cat(fed[start : start + STEPS_PER_EPOCH])) for start in range(0, STEPS, STEPS_PER_EPOCH)]
    floor = null_pass_floor(
        epochs, [BATCH] * STEPS_PER_EPOCH, estimator="baseline", arch_lr=ARCH_LR, temperature=0.5, seed=0
    )
    return augmentation, floor


@pytest.fixture(scope="module")
def known_answer(half_bright_images) -> tuple[AugmentationParameters, NoiseFloor]:
    return _search(noise=False, half_bright_images=half_bright_images)


def test_invert_leaves_the_noise_floor(known_answer):
    augmentation, floor = known_answer
    assert floor.steps == STEPS and 0 < floor.weight < 1 / 105 and 0 < floor.probability <= 0.5 and 0 < floor.magnitude <= 0.5
    weights = augmentation.sub_policy_weights().detach()
    above = weights - 1 / 105 > floor.weight
    assert above[WITH_INVERT].sum() >= 5, (weights[WITH_INVERT], floor)
    assert not above[~WITH_INVERT].any(), [SUB_POLICIES[index] for index in above.nonzero().flatten().tolist()]
    assert not (weights - 1 / 105 < -floor.weight).any()  # no weight left the band downwards either
    # p and m: in 40 steps at arch lr 0.02 a null pass moves some p by 0.44, as far as Invert's p move here
    counts = floor.outside(weights, augmentation.probabilities, augmentation.magnitudes)
    assert counts["weight"] == above.sum()


def test_nothing_leaves_the_noise_floor_when_the_objective_is_noise(half_bright_images):
    augmentation, floor = _search(noise=True, half_bright_images=half_bright_images)
    counts = floor.outside(augmentation.sub_policy_weights(), augmentation.probabilities, augmentation.magnitudes)
    assert counts == {"weight": 0, "probability": 0, "magnitude": 0}, (counts, floor)
    assert outside_line(counts).endswith("nothing moved further than a search whose objective says nothing about the draw")


def test_null_pass_is_deterministic_and_scales_with_the_steps():
    epochs = [objective_summary(torch.linspace(-1, 0.5, 50))] * 2
    first = null_pass_floor(epochs, [1] * 20, estimator="score-function", arch_lr=0.005, temperature=0.5, seed=3, replicates=3)
    again = null_pass_floor(epochs, [1] * 20, estimator="score-function", arch_lr=0.005, temperature=0.5, seed=3, replicates=3)
    other = null_pass_floor(epochs, [1] * 20, estimator="score-function", arch_lr=0.005, temperature=0.5, seed=4, replicates=3)
    longer = null_pass_floor(epochs * 8, [1] * 20, estimator="score-function", arch_lr=0.005, temperature=0.5, seed=3, replicates=3)
    assert first == again and first != other
    assert (first.steps, longer.steps) == (40, 320)
    for kind in ("weight", "probability", "magnitude"):
        assert getattr(longer, kind) > getattr(first, kind)
    with pytest.raises(ValueError, match="21 quantiles per epoch"):
        null_pass_floor([[0.0]], [1], estimator="baseline", arch_lr=0.005, temperature=0.5, seed=0)


def test_search_records_its_noise_floor_and_says_what_left_it(image_tree, tmp_path, capsys):
    result = search(
        "imagefolder", name="floor", output=tmp_path, data_dir=image_tree, model="wrn-10-1", image_size=8, cutout=0,
        batch_size=4, epochs=2, device="cpu",
    )
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    metadata = json.loads(result.paths.policy.read_text())["metadata"]
    floor = metadata["noise_floor"]
    assert set(floor) == {"weight", "probability", "magnitude", "steps", "method"}
    assert floor["steps"] == 6 and floor["method"].startswith("null pass")
    assert all(len(entry["objective"]) == 21 for entry in metadata["history"])
    counts = metadata["outside_noise_floor"]
    assert last_line == f"dada-search: {outside_line(counts)}"
    shown = subprocess.run(
        [sys.executable, "-m", "dada_transforms", "show", str(result.paths.policy)], capture_output=True, text=True, check=True
    ).stdout
    assert f"Searched: {outside_line(counts)}" in shown
