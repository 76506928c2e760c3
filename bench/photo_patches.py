"""A second real image set: patches of scikit-image's sample photos, one class per photo.

scikit-image ships a few dozen real photographs with the package (``skimage.data``,
offline). This script cuts square patches out of ten of them and writes an image
folder whose classes are the photos (``--photos`` picks others of ``OFFLINE_PHOTOS``):

- ``DIR/train/PHOTO/*.png``: ``--train-per-class`` patches from the even horizontal
  **bands** of each photo (``--band`` rows each: rows ``0 .. B``, ``2B .. 3B``, ...),
  which the searches and the evaluated networks train on;
- ``DIR/test/PHOTO/*.png``: ``--test-per-class`` patches from the odd bands (rows
  ``B .. 2B``, ...), held out: a patch lies inside one band, so no test patch shares
  a pixel with a training patch, and both sample the whole photo (sky and ground alike).

Each patch is a ``--crop-size`` square at a corner drawn uniformly without
replacement (a generator per photo and part, seeded from ``--seed``: the same
arguments write the same files), reduced to ``--patch-size`` px with Pillow's box
filter (the mean of each block when the sizes divide). The file name records the
corner, ``yROW-xCOL.png``, in the photo's pixels. The defaults (3 training and 100
test patches per photo, 64 px crops in 64-row bands, so one row of corners per band,
reduced to 16 px) are a regime where a fixed policy helps a small network
(docs/search.md).

The patches are grayscale (Pillow's ``L``: ITU-R 601-2 luma, saved as 8-bit ``L``
PNGs; the loaders read them as RGB with three equal channels): six of the ten
default photos (camera, brick, grass, gravel, coins, moon) are grayscale
photographs, so in colour "has colour" alone would name half the classes;
in gray every class is told apart by texture and structure only.

Usage: ``python bench/photo_patches.py --dir photo-patches [--train-per-class 3]``.
Needs scikit-image (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

OFFLINE_PHOTOS = (  # the 8-bit photographs (no drawings, no generated images) that skimage.data reads without a download
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "rocket",
)
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket")
TRAIN_PER_CLASS = 3
TEST_PER_CLASS = 100
PATCH_SIZE = 16
CROP_SIZE = 64
BAND = 64


def photo(name: str) -> np.ndarray:
    """The sample photo ``skimage.data.NAME`` as grayscale uint8 ``[H, W]`` (Pillow's ``L`` conversion of colour photos)."""
    if name not in OFFLINE_PHOTOS:
        raise ValueError(f"unknown scikit-image sample photo {name!r}; known: {', '.join(OFFLINE_PHOTOS)}")
    import skimage.data

    pixels = np.asarray(getattr(skimage.data, name)())
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"skimage.data.{name} is not an 8-bit photo (dtype {pixels.dtype}, shape {pixels.shape})")
    return np.asarray(Image.fromarray(pixels).convert("L")) if pixels.ndim == 3 else pixels


def patch_corners(
    height: int, width: int, crop_size: int, band: int, count: int, part: str, generator: np.random.Generator
) -> list[tuple[int, int]]:
    """``count`` distinct top-left corners ``(row, column)`` of ``crop_size`` squares inside the ``part`` bands of a photo.

    The photo's rows are cut into bands of ``band`` rows; ``"train"`` squares lie
    inside one even band (rows ``0 .. band``, ``2 band .. 3 band``, ...), ``"test"``
    squares inside one odd band: squares of the two never overlap.
    """
    first_band = 0 if part == "train" else 1
    rows = [
        row
        for start in range(first_band * band, height, 2 * band)
        for row in range(start, min(start + band, height) - crop_size + 1)
    ]
    columns = width - crop_size + 1
    if not rows or columns < 1:
        raise ValueError(f"a {crop_size} px crop does not fit in a {band}-row {part} band of a {height}x{width} photo")
    if count > len(rows) * columns:
        raise ValueError(f"{count} patches asked, but only {len(rows) * columns} distinct {crop_size} px crops fit in the {part} bands")
    chosen = generator.choice(len(rows) * columns, size=count, replace=False)
    return [(rows[int(index) // columns], int(index) % columns) for index in chosen]


def write_photo_patches(
    directory: Path,
    *,
    train_per_class: int = TRAIN_PER_CLASS,
    test_per_class: int = TEST_PER_CLASS,
    patch_size: int = PATCH_SIZE,
    crop_size: int = CROP_SIZE,
    band: int = BAND,
    seed: int = 0,
    photos: Sequence[str] = PHOTOS,
) -> tuple[int, int]:
    """Write ``directory/train/PHOTO/yROW-xCOL.png`` and ``directory/test/...``; the numbers of training and test patches."""
    for value, what in ((train_per_class, "train_per_class"), (test_per_class, "test_per_class"), (patch_size, "patch_size")):
        if value < 1:
            raise ValueError(f"{what} must be at least 1, got {value}")
    if crop_size < patch_size:
        raise ValueError(f"crop_size ({crop_size}) must be at least patch_size ({patch_size})")
    if band < crop_size:
        raise ValueError(f"band ({band}) must be at least crop_size ({crop_size})")
    if len(set(photos)) != len(photos) or len(photos) < 2:
        raise ValueError(f"photos must be at least two distinct names, got {list(photos)}")
    pictures = {name: photo(name) for name in photos}
    plan = [  # every corner first: a photo too small for the crop stops before anything is written
        (name, part, patch_corners(*pictures[name].shape, crop_size, band, count, part, np.random.default_rng([seed, index, part_index])))
        for index, name in enumerate(photos)
        for part_index, (part, count) in enumerate((("train", train_per_class), ("test", test_per_class)))
    ]
    for part in ("train", "test"):
        shutil.rmtree(directory / part, ignore_errors=True)
    for name, part, corners in plan:
        folder = directory / part / name
        folder.mkdir(parents=True, exist_ok=True)
        for row, column in corners:
            crop = Image.fromarray(pictures[name][row : row + crop_size, column : column + crop_size], mode="L")
            crop.resize((patch_size, patch_size), Image.Resampling.BOX).save(folder / f"y{row:04d}-x{column:04d}.png")
    return len(photos) * train_per_class, len(photos) * test_per_class


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="photo-patches", help="where to write train/ and test/ (default: photo-patches)")
    parser.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS, help=f"training patches per photo (default {TRAIN_PER_CLASS})")
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS, help=f"held-out patches per photo (default {TEST_PER_CLASS})")
    parser.add_argument("--patch-size", type=int, default=PATCH_SIZE, help=f"side of the written patches (default {PATCH_SIZE})")
    parser.add_argument("--crop-size", type=int, default=CROP_SIZE, help=f"side of the square cut from the photo (default {CROP_SIZE})")
    parser.add_argument("--band", type=int, default=BAND, help=f"rows per band, train and test bands alternating (default {BAND})")
    parser.add_argument("--seed", type=int, default=0, help="where the patches are cut (default 0)")
    parser.add_argument("--photos", default=",".join(PHOTOS), help=f"comma-separated skimage.data names (default {','.join(PHOTOS)})")
    args = parser.parse_args(argv)
    photos = [name.strip() for name in args.photos.split(",") if name.strip()]
    directory = Path(args.dir)
    try:
        trained, held_out = write_photo_patches(
            directory, train_per_class=args.train_per_class, test_per_class=args.test_per_class,
            patch_size=args.patch_size, crop_size=args.crop_size, band=args.band, seed=args.seed, photos=photos,
        )
    except (ValueError, ImportError) as error:
        parser.error(str(error))
    print(f"wrote {trained} training patches to {directory / 'train'} and {held_out} held-out patches to {directory / 'test'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
