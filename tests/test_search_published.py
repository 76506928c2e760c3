"""The published search behaviours: learning-rate schedule, ImageNet colour noise, un-augmented validation batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from dada_transforms.search.batches import color_jitter, draw_color_jitter, draw_lighting, lighting
from dada_transforms.search.bilevel import BilevelSearchStep
from dada_transforms.search.data import load_search_images, split_halves
from dada_transforms.search.loop import search
from dada_transforms.search.settings import SearchInputError, epoch_learning_rate, resolve_settings


@pytest.mark.parametrize("dataset, epochs", [("reduced-cifar10", 20), ("reduced-svhn", 20), ("cifar10", 3)])
def test_learning_rate_is_cosine_to_0_001_stepped_before_each_epoch(dataset, epochs):
    settings = resolve_settings(dataset, epochs=epochs)
    assert settings.lr_min == 0.001
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0.001)
    for epoch in range(epochs):
        optimizer.step()
        scheduler.step()  # the published loop steps the scheduler at the top of each epoch
        assert epoch_learning_rate(settings, epoch) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
    assert epoch_learning_rate(settings, epochs - 1) == pytest.approx(0.001)


def test_minimum_learning_rate_defaults_and_errors():
    assert resolve_settings("cifar10", lr=0.0005).lr_min == 0.0005  # never annealed upwards
    assert resolve_settings("cifar10", lr_min=0).lr_min == 0.0
    with pytest.raises(SearchInputError, match=r"minimum learning rate 0\.5 is above the learning rate 0\.1"):
        resolve_settings("cifar10", lr_min=0.5)
    with pytest.raises(SearchInputError, match="estimator must be one of baseline, relax, score-function, got 'x'"):
        resolve_settings("cifar10", estimator="x")
    with pytest.raises(SearchInputError, match="validation batches must be one of fresh, fixed"):
        resolve_settings("cifar10", val_batches="augmented")


def test_imagenet_search_adds_colour_jitter_and_lighting():
    for dataset in ("imagenet", "reduced-imagenet"):
        settings = resolve_settings(dataset)
        assert (settings.color_jitter, settings.lighting) == (0.4, 0.1)
    settings = resolve_settings("reduced-cifar10")
    assert (settings.color_jitter, settings.lighting) == (0.0, 0.0)


def test_color_jitter_equals_torchvision_per_image():
    images = torch.rand(24, 3, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    factors, order = draw_color_jitter(24, 0.4, torch.Generator().manual_seed(1))
    assert factors.min() >= 0.6 and factors.max() <= 1.4
    assert len({tuple(row) for row in order.tolist()}) == 6  # every order of the three occurs
    ours = color_jitter(images, factors, order)
    kernels = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for index in range(24):
        expected = images[index]
        for kind in order[index].tolist():
            expected = kernels[kind](expected, factors[index, kind].item())
        torch.testing.assert_close(ours[index], expected, rtol=0, atol=1e-12)


def test_lighting_adds_the_published_pca_noise():
    images = torch.rand(4, 3, 5, 5, dtype=torch.float64)
    weights = draw_lighting(4, 0.1, torch.Generator().manual_seed(0))
    ours = lighting(images, weights)
    # the published Lighting (fb.resnet.torch, used by the authors): eigvec * alpha * eigval, summed per row
    eigval = torch.tensor([0.2175, 0.0188, 0.0045], dtype=torch.float64)
    eigvec = torch.tensor(
        [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]], dtype=torch.float64
    )
    for index in range(4):
        alpha = weights[index].double()
        rgb = eigvec.clone().mul(alpha.view(1, 3).expand(3, 3)).mul(eigval.view(1, 3).expand(3, 3)).sum(1)
        torch.testing.assert_close(ours[index], images[index] + rgb.view(3, 1, 1))


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """2 classes x 12 images of 8x8 px: 12 search-train and 12 search-val images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    for label in range(2):
        (root / f"class{label}").mkdir()
        for index in range(12):
            Image.fromarray((rng.rand(8, 8, 3) * 255).astype(np.uint8)).save(root / f"class{label}" / f"{index}.png")
    return root


def _recorded_validation_batches(monkeypatch, image_tree, tmp_path, val_batches):
    seen = []
    original = BilevelSearchStep.step

    def recording(self, train_images, train_labels, val_images, val_labels):
        seen.append(val_images.clone())
        return original(self, train_images, train_labels, val_images, val_labels)

    monkeypatch.setattr(BilevelSearchStep, "step", recording)
    search(
        "imagefolder", name="v", output=tmp_path, data_dir=image_tree, model="wrn-10-1", image_size=8, cutout=0,
        batch_size=4, epochs=1, device="cpu", progress=False, val_batches=val_batches,
    )
    return seen


@pytest.mark.parametrize("val_batches", ["fresh", "fixed"])
def test_validation_batches_are_unaugmented_fresh_or_the_fixed_first(monkeypatch, image_tree, tmp_path, val_batches):
    seen = _recorded_validation_batches(monkeypatch, image_tree, tmp_path, val_batches)
    data = load_search_images("imagefolder", image_tree, image_size=8)
    val_images = data.images[split_halves(data.labels)[1]]
    assert len(seen) == 3  # 1 epoch of 3 steps
    for batch in seen:
        for image in batch:  # exactly a search-val image: not cropped, flipped or otherwise changed
            assert any(torch.equal(image, candidate) for candidate in val_images)
    if val_batches == "fixed":
        assert all(torch.equal(batch, val_images[:4]) for batch in seen)
    else:
        assert not torch.equal(seen[0], seen[1])
        assert sorted(image.sum().item() for batch in seen for image in batch) == sorted(
            image.sum().item() for image in val_images
        )  # an epoch visits every search-val image once
