"""bench/photo_patches.py: real photo pixels, disjoint train and test halves, counts, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data as skimage_data
from PIL import Image

PHOTOS = ("astronaut", "camera", "coins")  # colour, grayscale, and a photo that is not square


@pytest.fixture(scope="module")
def patches(bench_script):
    return bench_script("photo_patches")


def corners(folder: Path) -> list[tuple[int, int]]:
    """The ``(row, column)`` each file name ``yROW-xCOL.png`` records."""
    return sorted((int(path.stem[1:5]), int(path.stem[7:11])) for path in folder.iterdir())


def gray(name: str) -> np.ndarray:
    pixels = getattr(skimage_data, name)()
    return np.asarray(Image.fromarray(pixels).convert("L")) if pixels.ndim == 3 else pixels


def test_counts_classes_and_sizes(patches, tmp_path) -> None:
    written = patches.write_photo_patches(tmp_path, train_per_class=4, test_per_class=6, photos=PHOTOS)
    assert written == (12, 18)
    for part, count in (("train", 4), ("test", 6)):
        assert sorted(path.name for path in (tmp_path / part).iterdir()) == sorted(PHOTOS)
        for name in PHOTOS:
            files = list((tmp_path / part / name).iterdir())
            assert len(files) == count
            with Image.open(files[0]) as image:
                assert image.size == (16, 16) and image.mode == "L"


def test_patches_are_the_photo_pixels(patches, tmp_path) -> None:
    """Crop = patch size: each patch is exactly the photo's region; 2x reduction: the 2x2 block means of it (to 1 level:
    Pillow's box filter rounds in fixed point)."""
    patches.write_photo_patches(tmp_path / "exact", train_per_class=3, test_per_class=3, patch_size=24, crop_size=24, photos=PHOTOS)
    patches.write_photo_patches(tmp_path / "reduced", train_per_class=3, test_per_class=3, patch_size=16, crop_size=32, photos=PHOTOS)
    for name in PHOTOS:
        source = gray(name)
        for part in ("train", "test"):
            for path in (tmp_path / "exact" / part / name).iterdir():
                row, column = int(path.stem[1:5]), int(path.stem[7:11])
                assert np.array_equal(np.asarray(Image.open(path)), source[row : row + 24, column : column + 24])
            for path in (tmp_path / "reduced" / part / name).iterdir():
                row, column = int(path.stem[1:5]), int(path.stem[7:11])
                region = source[row : row + 32, column : column + 32].astype(float)
                means = region.reshape(16, 2, 16, 2).mean(axis=(1, 3))
                assert np.abs(np.asarray(Image.open(path)).astype(float) - means).max() <= 1


def test_train_and_test_patches_never_share_a_pixel(patches, tmp_path) -> None:
    """Every patch lies inside one band of rows: even bands for training, odd ones for testing."""
    patches.write_photo_patches(tmp_path, train_per_class=50, test_per_class=50, crop_size=40, band=50, photos=PHOTOS)
    for name in PHOTOS:
        height, width = gray(name).shape
        for part, parity in (("train", 0), ("test", 1)):
            found = corners(tmp_path / part / name)
            assert len(set(found)) == 50
            for row, column in found:
                assert row // 50 == (row + 39) // 50 and (row // 50) % 2 == parity
                assert row + 40 <= height and column + 40 <= width
        train = np.zeros((height, width), bool)
        for row, column in corners(tmp_path / "train" / name):
            train[row : row + 40, column : column + 40] = True
        assert not any(train[row : row + 40, column : column + 40].any() for row, column in corners(tmp_path / "test" / name))


def test_the_same_seed_writes_the_same_files_and_another_seed_other_ones(patches, tmp_path) -> None:
    arguments = {"train_per_class": 5, "test_per_class": 5, "photos": PHOTOS}
    for folder, seed in (("a", 3), ("b", 3), ("c", 4)):
        patches.write_photo_patches(tmp_path / folder, seed=seed, **arguments)

    def contents(folder: str) -> dict[str, bytes]:
        root = tmp_path / folder
        return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.png"))}

    assert contents("a") == contents("b")
    assert set(contents("a")) != set(contents("c"))


def test_bad_arguments_are_refused_before_anything_is_written(patches, tmp_path) -> None:
    with pytest.raises(ValueError, match="does not fit in a 400-row test band of a 512x512 photo"):
        patches.write_photo_patches(tmp_path, crop_size=300, band=400, photos=PHOTOS)
    with pytest.raises(ValueError, match="band"):
        patches.write_photo_patches(tmp_path, crop_size=32, band=16, photos=PHOTOS)
    with pytest.raises(ValueError, match="unknown scikit-image sample photo 'nonesuch'"):
        patches.write_photo_patches(tmp_path, photos=("camera", "nonesuch"))
    with pytest.raises(ValueError, match="crop_size"):
        patches.write_photo_patches(tmp_path, patch_size=32, crop_size=16, photos=PHOTOS)
    assert not any(tmp_path.iterdir())


def test_the_command_line_reports_bad_input_in_one_line(patches, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        patches.main(["--dir", str(tmp_path), "--train-per-class", "0"])
    assert stop.value.code == 2 and "train_per_class must be at least 1, got 0" in capsys.readouterr().err
    assert patches.main(["--dir", str(tmp_path), "--train-per-class", "2", "--test-per-class", "3", "--photos", "camera,moon"]) == 0
    assert "wrote 4 training patches" in capsys.readouterr().out
