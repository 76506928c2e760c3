"""Shared test helpers: small, deterministic, photo-like images."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

# One CPU thread, here and in every process the tests start (set before torch loads): the
# tests' tensors are tiny, and on a 2-core machine OpenMP's spinning threads made them up
# to 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:
    import torch


def make_photo(width: int = 40, height: int = 32, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A small image with gradients, shapes and texture, so every operation changes it."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    pixels = image.load()
    for y in range(height):
        for x in range(width):
            pixels[x, y] = (
                (x * 255) // max(1, width - 1),
                (y * 255) // max(1, height - 1),
                rng.randrange(40, 200),
            )
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.ellipse((x0, y0, x0 + width // 3, y0 + height // 3), fill=colour)
    image = image.filter(ImageFilter.SMOOTH)
    return image.convert(mode) if mode != "RGB" else image


@pytest.fixture
def photo() -> Image.Image:
    return make_photo()


@pytest.fixture
def make_image():
    """The ``make_photo(width, height, mode, seed)`` factory, for tests that need several images."""
    return make_photo


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """A tiny ImageFolder for searches: 3 classes x 8 images of 20x24 px (12 search-train and
    12 search-val images, 3 steps of 4 per epoch)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    for label in range(3):
        (root / f"class{label}").mkdir()
        for index in range(8):
            pixels = (rng.rand(20, 24, 3) * 120 + 60 * label).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{label}" / f"{index}.png")
    return root


def _half_bright_images(count: int, seed: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: bright left half, class 1: bright right half (grey, with noise): the upright/inverted test's data."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (count,), generator=generator)
    noise = torch.randint(0, 60, (count, 1, size, size), generator=generator)
    left = torch.zeros(1, 1, 1, size, dtype=torch.bool)
    left[..., : size // 2] = True
    bright = left ^ labels.view(-1, 1, 1, 1).bool()
    return (noise + bright * 190).to(torch.uint8).expand(-1, 3, -1, -1).contiguous(), labels


@pytest.fixture(scope="session")
def half_bright_images():
    """``half_bright_images(count, seed)``: images whose class is the bright half, left or right."""
    return _half_bright_images


@pytest.fixture
def tiny_image_folder(tmp_path, make_image) -> Path:
    """An ImageFolder tree in timm's layout: train/ (8 per class) and validation/ (2 per class), cat and dog."""
    root = tmp_path / "data"
    for split, per_class in (("train", 8), ("validation", 2)):
        for label, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for index in range(per_class):
                seed = 1000 * label + index + (500 if split == "validation" else 0)
                make_image(36 + index, 40, seed=seed).save(root / split / name / f"{index}.png")
    return root


@contextlib.contextmanager
def _stopping_after_a_checkpoint():
    import dada_transforms.search.checkpoint as checkpoint_module

    real_save = checkpoint_module.save_checkpoint

    def save_then_stop(directory, state):
        real_save(directory, state)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint_module, "save_checkpoint", save_then_stop)
        yield


@pytest.fixture(scope="session")
def stopping_after_a_checkpoint():
    """A context manager: inside it, a search is interrupted (KeyboardInterrupt) right after it
    saves its first checkpoint, as by Ctrl-C at that moment."""
    return _stopping_after_a_checkpoint


def _load_bench_script(name: str):
    """``bench/NAME.py`` imported as a module (the bench scripts are not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_script():
    """Imports a script of bench/ by name: ``bench_script("digits_demo")``."""
    return _load_bench_script
