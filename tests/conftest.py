"""Shared test helpers: small, deterministic, photo-like images."""

from __future__ import annotations

import os

# One CPU thread, here and in every process the tests start (set before torch loads): the
# tests' tensors are tiny, and on a 2-core machine OpenMP's spinning threads made them up
# to 10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter


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
