"""Grid pictures of a policy: layout, differing tiles, honest captions, repeatability, the demo photo."""

from __future__ import annotations

from importlib import resources

import pytest
import torch
from PIL import Image, ImageChops, ImageOps

from dada_transforms import DADA, Policy
from dada_transforms.grid import GridLayout, augmented_samples, demo_image, make_grid

ALWAYS_CHANGES = Policy.from_list([[("Cutout", 1.0, 1.0), ("Rotate", 1.0, 0.9)]])


def tiles(grid: Image.Image, samples: int, columns: int, tile_size: int, caption_lines: int) -> list[Image.Image]:
    layout = GridLayout(samples + 1, columns, tile_size, caption_lines)
    assert grid.size == layout.size
    return [grid.crop(layout.tile_box(index)) for index in range(samples + 1)]


def same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a, b).getbbox() is None


def test_grid_has_the_layout_size_and_the_original_first(make_image):
    image = make_image(90, 70)
    grid = make_grid(ALWAYS_CHANGES, image, samples=5, columns=3, tile_size=64)
    assert grid.size == (3 * 70 + 6, 2 * (64 + 2 * 14 + 12) + 6)
    original, *samples = tiles(grid, 5, 3, 64, 2)
    assert same(original, ImageOps.fit(image, (64, 64), Image.Resampling.LANCZOS))


def test_every_tile_differs_from_the_original_and_from_each_other(make_image):
    original, *samples = tiles(make_grid(ALWAYS_CHANGES, make_image(80, 80), samples=7, columns=4, tile_size=64), 7, 4, 64, 2)
    for index, sample in enumerate(samples):
        assert not same(sample, original), index
        for other in samples[index + 1 :]:
            assert not same(sample, other)


def test_a_published_preset_changes_most_tiles():
    original, *samples = tiles(make_grid("imagenet", samples=15), 15, 4, 160, 2)
    changed = [not same(sample, original) for sample in samples]
    assert sum(changed) >= 10
    assert len({sample.tobytes() for sample in samples}) >= 10


def test_the_seed_makes_the_grid_repeatable(make_image):
    image = make_image(64, 64)
    first = make_grid("cifar10", image, samples=5, seed=3, tile_size=64)
    assert same(first, make_grid("cifar10", image, samples=5, seed=3, tile_size=64))
    assert not same(first, make_grid("cifar10", image, samples=5, seed=4, tile_size=64))


def test_captions_name_exactly_the_operations_applied(make_image):
    image = make_image(48, 40)
    transform = DADA([[("Invert", 0.5, 0.0)]], generator=torch.Generator().manual_seed(1))
    samples = augmented_samples(transform, image, 40)
    assert {sample.applied for sample in samples} == {(), ("Invert",)}
    for sample in samples:
        expected = ImageOps.invert(image) if sample.applied else image
        assert same(sample.image, expected)


def test_captions_show_the_sign_drawn_for_mirrored_operations(make_image):
    transform = DADA([[("Rotate", 1.0, 0.95)]], generator=torch.Generator().manual_seed(0))
    labels = {sample.applied for sample in augmented_samples(transform, make_image(40, 40), 30)}
    assert labels == {("Rotate +27.0 deg",), ("Rotate -27.0 deg",)}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"samples": 0}, "samples must be an integer in [1, 256], got 0"),
        ({"columns": 0}, "columns must be an integer >= 1, got 0"),
        ({"tile_size": 16}, "tile_size must be an integer in [64, 1024], got 16"),
        ({"seed": -1}, f"seed must be an integer in [0, {2**64 - 1}], got -1"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_grid("imagenet", **options)


def test_an_unreadable_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="cannot read image .*not-an-image.png"):
        make_grid("imagenet", bad)


def test_the_demo_photo_ships_with_its_licence():
    photo = demo_image()
    assert photo.mode == "RGB" and min(photo.size) >= 200
    licence = (resources.files("dada_transforms") / "assets" / "LICENSE-demo.txt").read_text()
    assert "CC0" in licence and "chelsea" in licence


def test_greyscale_and_transparent_images_are_accepted(make_image):
    for mode in ("L", "RGBA"):
        grid = make_grid("svhn", make_image(70, 50, mode=mode), samples=3, tile_size=64)
        assert grid.mode == "RGB"
