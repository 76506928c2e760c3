"""Known answers for every search method, through its step on tiny data (seconds each).

- **Invert**: the search-train images are upright, the search-val images inverted
  (two classes of 8x8 images, the bright half left or right: an inverted class-0
  image looks like an upright class 1), so only training on inverted images lowers
  the validation loss: the search must raise Invert.
- **Rotate**: the search-val images are rotated by 20 degrees, either way. The
  compact search, whose mirrored magnitudes are strengths (|argument| = 30 m
  degrees, 15 at the start), must move Rotate toward 20 degrees, and the same
  search (same seeds) with upright search-val images away from it, on average over
  three seeds (measured: 16.4 against 14.5 degrees after 60 steps; the one-step
  objective's reward for rotation on 8x8 images is small). The published method
  (|argument| = |60 m - 30|, 0 at its start m = 0.5, a saddle of a mirrored
  operation's expected objective) with the straight-through gradient, the same for
  every operation (d x' / d m = 1), cannot tell Rotate from the others.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dada_transforms.ops import OPERATION_NAMES
from dada_transforms.search import (
    SUB_POLICIES,
    AugmentationParameters,
    BilevelSearchStep,
)
from dada_transforms.search.compact import CompactAugmentation
from dada_transforms.search.compact_step import CompactSearchStep

BATCH = 32
SIZE = 8
ANGLE = 20.0
ROTATE = OPERATION_NAMES.index("Rotate")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    )


def _rotated(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Each image rotated by +ANGLE or -ANGLE (torchvision, nearest, black fill)."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.where(torch.rand(len(images), generator=generator) < 0.5, -1.0, 1.0).tolist()
    return torch.stack([TF.rotate(image, ANGLE * sign) for image, sign in zip(images, signs)])


def _search(step, half_bright_images, steps: int, validation: str) -> None:
    """``steps`` steps; search-val ``"inverted"``, ``"rotated"`` or ``"upright"``."""
    train_images, train_labels = half_bright_images(BATCH * steps, seed=0, size=SIZE)
    val_images, val_labels = half_bright_images(BATCH * steps, seed=1, size=SIZE)
    if validation == "inverted":
        val_images = 255 - val_images
    elif validation == "rotated":
        val_images = _rotated(val_images, seed=3)
    for start in range(0, BATCH * steps, BATCH):
        part = slice(start, start + BATCH)
        step.step(train_images[part], train_labels[part], val_images[part], val_labels[part])


def _compact_step(parameters: CompactAugmentation, objective: str = "unrolled") -> CompactSearchStep:
    return CompactSearchStep(
        _model(), parameters, draws=4, objective=objective, lr=0.05, weight_decay=0.0, mean=(0.5,) * 3,
        std=(0.25,) * 3, cutout=0, arch_lr=0.01, generator=torch.Generator().manual_seed(1),
    )


def _published_step(parameters: AugmentationParameters, magnitude_grad: str) -> BilevelSearchStep:
    return BilevelSearchStep(
        _model(), parameters, lr=0.05, weight_decay=0.0, mean=(0.5,) * 3, std=(0.25,) * 3, cutout=0,
        sampling="per-sample", arch_lr=0.02, magnitude_grad=magnitude_grad, generator=torch.Generator().manual_seed(1),
    )


def _argument(magnitude: torch.Tensor) -> torch.Tensor:
    """Rotate's |argument| in degrees at a magnitude."""
    return (60 * magnitude - 30).abs()


def test_compact_raises_invert_when_validation_images_are_inverted(half_bright_images):
    parameters = CompactAugmentation()
    _search(_compact_step(parameters), half_bright_images, steps=40, validation="inverted")
    weights = parameters.operation_weights().detach()
    invert = OPERATION_NAMES.index("Invert")
    assert weights.argmax() == invert, weights
    assert weights[invert] > 1.5 / 15  # from 1/15
    # from 0.5: applying more often applies Invert more often (and the other operations too, which hold it below 1)
    assert parameters.probability.item() > 0.7


def _paired_rotate_arguments(run, half_bright_images) -> tuple[float, float]:
    """Rotate's mean final |argument| over seeds 1-3, with rotated and with upright search-val images."""
    found = []
    for validation in ("rotated", "upright"):
        arguments = [run(seed, validation).item() for seed in (1, 2, 3)]
        found.append(sum(arguments) / len(arguments))
    return found[0], found[1]


def test_compact_moves_rotates_magnitude_toward_the_validation_angle(half_bright_images):
    def run(seed: int, validation: str) -> torch.Tensor:
        parameters = CompactAugmentation()
        step = _compact_step(parameters)
        step.generator.manual_seed(seed)
        _search(step, half_bright_images, steps=60, validation=validation)
        return 30 * parameters.magnitudes.detach()[ROTATE]  # a strength: |argument| = 30 m degrees

    rotated, upright = _paired_rotate_arguments(run, half_bright_images)
    # from the start's 15 degrees: toward 20 with rotated search-val, away from it with upright search-val
    assert rotated > 15.5 and upright < 15.0 and rotated > upright + 1.0, (rotated, upright)


def test_published_raises_the_invert_sub_policies(half_bright_images):
    parameters = AugmentationParameters()
    _search(_published_step(parameters, "straight-through"), half_bright_images, steps=40, validation="inverted")
    with_invert = torch.tensor(["Invert" in sub_policy for sub_policy in SUB_POLICIES])
    weights = parameters.sub_policy_weights().detach()
    assert weights[with_invert].mean() > 1.4 * weights[~with_invert].mean(), weights
    invert_slots = torch.tensor([[op == "Invert" for op in sub_policy] for sub_policy in SUB_POLICIES])
    assert parameters.probabilities.detach()[invert_slots].mean() > 0.55


def _rotate_slots() -> torch.Tensor:
    return torch.tensor([[op == "Rotate" for op in sub_policy] for sub_policy in SUB_POLICIES])


@pytest.mark.xfail(strict=True, reason="op-blind straight-through magnitude gradient")
def test_published_moves_rotates_magnitudes_toward_the_validation_angle(half_bright_images):
    def run(seed: int, validation: str) -> torch.Tensor:
        parameters = AugmentationParameters()
        step = _published_step(parameters, "straight-through")
        step.generator.manual_seed(seed)
        _search(step, half_bright_images, steps=60, validation=validation)
        return _argument(parameters.magnitudes.detach()[_rotate_slots()]).mean()

    rotated, upright = _paired_rotate_arguments(run, half_bright_images)
    assert rotated > upright + 2.0, (rotated, upright)  # degrees
