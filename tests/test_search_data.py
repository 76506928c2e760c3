"""dada-search's data, splits, models, settings and checkpoints (through the public modules)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dada_transforms.search.batches import crop_and_flip
from dada_transforms.search.data import load_search_images, open_search_images, reduced_imagenet_classes, split_halves
from dada_transforms.search.models import build_model
from dada_transforms.search.settings import SearchInputError, resolve_settings
from dada_transforms.search.splits import stratified_split

model_selection = pytest.importorskip("sklearn.model_selection")


def _sklearn_split(labels: np.ndarray, train_size: int) -> tuple[np.ndarray, np.ndarray]:
    splitter = model_selection.StratifiedShuffleSplit(n_splits=1, test_size=len(labels) - train_size, random_state=0)
    return next(splitter.split(np.zeros(len(labels)), labels))


@pytest.mark.parametrize(
    "labels, train_size",
    [
        (np.repeat(np.arange(10), 5000), 4000),  # CIFAR-10's layout: the published reduced split
        (np.random.RandomState(1).randint(0, 10, 50000), 4000),  # uneven classes: ties broken at random
        (np.random.RandomState(2).randint(0, 100, 50000), 4000),  # CIFAR-100-like
        (np.random.RandomState(3).randint(0, 10, 73257), 1000),  # SVHN-sized
        (np.random.RandomState(4).randint(0, 7, 333), 166),  # odd sizes
    ],
)
def test_stratified_split_equals_scikit_learn(labels: np.ndarray, train_size: int) -> None:
    ours = stratified_split(labels, train_size, seed=0)
    theirs = _sklearn_split(labels, train_size)
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])


def test_stratified_split_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"classes with one: \[2\]"):
        stratified_split(np.array([0, 0, 1, 1, 2]), 2)
    with pytest.raises(ValueError, match="train_size .* got 10"):
        stratified_split(np.array([0, 1] * 5), 10)
    with pytest.raises(ValueError, match="fewer than the 3 classes"):
        stratified_split(np.array([0, 1, 2] * 4), 2)


def test_halves_are_stratified_and_disjoint() -> None:
    labels = torch.as_tensor(np.repeat(np.arange(10), 400))
    train, val = split_halves(labels)
    assert len(train) == len(val) == 2000
    assert set(train).isdisjoint(val) and len(set(train) | set(val)) == 4000
    assert np.bincount(labels.numpy()[train]).tolist() == [200] * 10


def test_reduced_imagenet_classes() -> None:
    classes = reduced_imagenet_classes()
    assert len(classes) == len(set(classes)) == 120
    assert classes == sorted(classes) and 0 <= classes[0] and classes[-1] < 1000
    assert classes[:3] == [16, 23, 52] and classes[-1] == 959


def test_crop_and_flip_gives_shifted_or_mirrored_crops() -> None:
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = crop_and_flip(images, 2, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    kinds = set()
    for index in range(16):
        matches = [
            (top, left, flip)
            for top in range(5)
            for left in range(5)
            for flip in (False, True)
            if torch.equal(
                out[index],
                padded[index, :, top : top + 8, left : left + 8].flip(-1)
                if flip
                else padded[index, :, top : top + 8, left : left + 8],
            )
        ]
        assert matches, f"image {index} is not a crop of its padded input"
        kinds.add(matches[0][2])
    assert kinds == {False, True}
    again = crop_and_flip(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


@pytest.fixture
def image_tree(tmp_path):
    rng = np.random.RandomState(0)
    for label in range(3):
        folder = tmp_path / "tree" / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(4):
            pixels = (rng.rand(40, 48, 3) * 100 + 50 * label).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png")
    return tmp_path / "tree"


def test_image_folder_loads_as_uint8_squares(image_tree) -> None:
    data = load_search_images("imagefolder", image_tree, image_size=16)
    assert data.images.shape == (12, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and data.num_classes == 3
    mean = data.images.double().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(data.mean, dtype=torch.float64), mean, atol=1e-6)


def test_missing_data_names_the_folder(tmp_path) -> None:
    with pytest.raises(SearchInputError, match=r"cifar10 not found in '.*empty'.*--download"):
        load_search_images("reduced-cifar10", tmp_path / "empty")
    with pytest.raises(SearchInputError, match="needs --data-dir"):
        load_search_images("imagefolder", None)
    with pytest.raises(SearchInputError, match="does not exist"):
        load_search_images("imagefolder", tmp_path / "nowhere")
    with pytest.raises(SearchInputError, match="ImageNet not found in"):
        load_search_images("reduced-imagenet", tmp_path)


def test_wide_resnets_have_the_standard_sizes() -> None:
    counts = {name: sum(p.numel() for p in build_model(name, 10).parameters()) for name in ("wrn-40-2", "wrn-28-10")}
    assert abs(counts["wrn-40-2"] - 2.24e6) < 0.02e6
    assert abs(counts["wrn-28-10"] - 36.5e6) < 0.1e6
    assert build_model("wrn-10-1", 7)(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_timm_models_build_without_download() -> None:
    model = build_model("test_resnet", 5)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown model 'resnet5O'.*did you mean"):
        build_model("resnet5O", 10)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        build_model("wrn-12-2", 10)


def test_settings_follow_the_published_table() -> None:
    cifar10 = resolve_settings("reduced-cifar10")
    assert (cifar10.model, cifar10.batch_size, cifar10.lr, cifar10.weight_decay, cifar10.cutout) == ("wrn-40-2", 128, 0.1, 2e-4, 16)
    assert (cifar10.epochs, cifar10.temperature, cifar10.arch_lr, cifar10.top_k) == (20, 0.5, 0.005, 25)
    cifar100 = resolve_settings("cifar100")
    assert (cifar100.batch_size, cifar100.weight_decay) == (32, 5e-4)
    svhn = resolve_settings("reduced-svhn")
    assert (svhn.model, svhn.batch_size, svhn.lr, svhn.weight_decay) == ("wrn-28-10", 32, 0.00125, 1e-3)
    imagenet = resolve_settings("reduced-imagenet")
    assert (imagenet.model, imagenet.lr, imagenet.weight_decay, imagenet.image_size) == ("resnet50", 0.00125, 1e-4, 224)
    override = resolve_settings("reduced-svhn", model="wrn-40-2", batch_size=8, lr=0.05, cutout=0)
    assert (override.model, override.batch_size, override.lr, override.cutout) == ("wrn-40-2", 8, 0.05, 0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"top_k": 106}, r"top-k must be an integer in \[1, 105\], got 106"),
        ({"lr": -1.0}, "learning rate must be a finite number > 0, got -1.0"),
        ({"temperature": float("nan")}, "temperature must be a finite number > 0, got nan"),
        ({"sampling": "per-pixel"}, "sampling must be one of per-batch, per-sample, got 'per-pixel'"),
        ({"cutout": 40}, "cutout 40 px is larger than the image size 32 px"),
    ],
)
def test_bad_settings_are_named(options, message) -> None:
    with pytest.raises(SearchInputError, match=message):
        resolve_settings("cifar10", **options)
    with pytest.raises(SearchInputError, match="dataset must be one of"):
        resolve_settings("mnist")


def test_unreadable_images_are_named_or_skipped(image_tree) -> None:
    bad = image_tree / "class1" / "2.png"
    bad.write_bytes(b"\x89PNG truncated")
    with pytest.raises(SearchInputError, match=rf"cannot read image '{bad}' \(not an image format that Pillow reads\)"):
        load_search_images("imagefolder", image_tree, image_size=16)
    data = load_search_images("imagefolder", image_tree, image_size=16, bad_images="skip")
    assert data.skipped == (str(bad),) and len(data) == 11
    assert data.labels.tolist() == [0] * 4 + [1] * 3 + [2] * 4
    bad.unlink()
    without = load_search_images("imagefolder", image_tree, image_size=16)  # skipping = leaving the file out
    assert torch.equal(data.images, without.images) and torch.equal(data.labels, without.labels)
    with pytest.raises(SearchInputError, match="bad_images must be one of fail, skip, got 'ignore'"):
        load_search_images("imagefolder", image_tree, bad_images="ignore")


def test_image_folder_class_problems_are_named(image_tree) -> None:
    (image_tree / "empty").mkdir()
    with pytest.raises(SearchInputError, match=rf"class folder 'empty' in '{image_tree}' holds no images \(files ending in .jpg"):
        load_search_images("imagefolder", image_tree, image_size=16)
    (image_tree / "empty").rmdir()
    for extra in ("1.png", "2.png", "3.png"):
        (image_tree / "class2" / extra).unlink()
    with pytest.raises(SearchInputError, match="class folder 'class2' in .* holds fewer than 2 images"):
        load_search_images("imagefolder", image_tree, image_size=16)
    with pytest.raises(SearchInputError, match="no class folders in"):
        load_search_images("imagefolder", image_tree / "class2", image_size=16)


def test_16_bit_images_are_refused_not_searched_as_white(image_tree) -> None:
    wide = image_tree / "class0" / "wide.png"
    Image.fromarray((np.arange(20 * 24).reshape(20, 24) * 100).astype(np.uint16)).save(wide)
    assert Image.open(wide).mode == "I;16"  # a real 16-bit PNG, as Pillow writes it
    for data_path in ("memory", "stream"):
        with pytest.raises(SearchInputError, match=rf"cannot read image '{wide}' \(I;16 pixels of more than 8 bits"):
            open_search_images("imagefolder", image_tree, image_size=16, data_path=data_path)


def _run_bounded(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python, killed after 120 s: a regression that blocks fails instead of hanging the suite."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs need POSIX")
def test_a_fifo_in_an_image_folder_is_named_not_waited_on(image_tree) -> None:
    fifo = image_tree / "class1" / "fifo.png"
    os.mkfifo(fifo)
    code = f"""
import numpy as np, torch
from dada_transforms.search.data import ImageFiles, open_search_images
from dada_transforms.search.fingerprint import data_fingerprint
from dada_transforms.search.settings import SearchInputError
for data_path in ("memory", "stream"):
    try:
        open_search_images("imagefolder", {str(image_tree)!r}, image_size=16, data_path=data_path)
    except SearchInputError as error:
        print(error)
files = ImageFiles(({str(fifo)!r}, {str(image_tree / "class0" / "0.png")!r}), torch.tensor([0, 1]), 2,
                   (0.5,) * 3, (0.2,) * 3, ("a", "b"), 16)
try:
    data_fingerprint(files, np.array([0]), np.array([1]))
except SearchInputError as error:
    print(error)
"""
    result = _run_bounded(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"cannot read image '{fifo}' (not a regular file); fix or remove it, or pass --bad-images "
                         f"skip (bad_images='skip' in Python) to leave unreadable images out"] * 2
    assert lines[2] == f"cannot read image file '{fifo}': not a regular file; cannot fingerprint the searched images"
