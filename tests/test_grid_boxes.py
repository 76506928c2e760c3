"""``dada-transforms grid --boxes/--mask``: targets drawn on every tile where the policy moved the pixels."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageChops
from torchvision.transforms.v2 import functional as F

from dada_transforms import Policy
from dada_transforms.cli import main
from dada_transforms.grid import GridLayout, make_grid

TILE = 64
SQUARE = (40, 24, 72, 56)  # white on black, in a 128 x 96 image (fitted: a 96-pixel crop, scale 2/3)
MOVES = Policy.from_list([[("TranslateX", 0.5, 0.3), ("Rotate", 0.5, 0.8), ("Brightness", 0.3, 0.9)]])


def _image() -> Image.Image:
    image = Image.new("RGB", (128, 96))
    image.paste((255, 255, 255), SQUARE)
    return image


def _extent(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = mask.nonzero().unbind(1)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def _tiles(grid: Image.Image, samples: int) -> list[torch.Tensor]:
    layout = GridLayout(samples + 1, 4, TILE, caption_lines=3)
    return [F.pil_to_tensor(grid.crop(layout.tile_box(index))) for index in range(samples + 1)]


def test_boxes_and_mask_outline_follow_the_pixels():
    samples = 11
    mask = Image.new("L", (128, 96))
    mask.paste(255, SQUARE)
    plain = _tiles(make_grid(MOVES, _image(), samples=samples, tile_size=TILE, seed=3), samples)
    boxed = _tiles(make_grid(MOVES, _image(), samples=samples, tile_size=TILE, seed=3, boxes=[SQUARE]), samples)
    outlined = _tiles(make_grid(MOVES, _image(), samples=samples, tile_size=TILE, seed=3, mask=mask), samples)
    green = torch.tensor([0, 255, 64], dtype=torch.uint8).view(3, 1)
    magenta = torch.tensor([255, 0, 255], dtype=torch.uint8).view(3, 1)
    moved_tiles = 0
    for tile, with_box, with_outline in zip(plain, boxed, outlined):
        square = _extent((tile > 127).all(0)).float()  # where the policy moved the white square's pixels
        drawn_box = (with_box.flatten(1) == green).all(0).view(TILE, TILE)
        drawn_outline = (with_outline.flatten(1) == magenta).all(0).view(TILE, TILE)
        assert torch.equal(with_box[:, ~drawn_box], tile[:, ~drawn_box])  # the same draw as without boxes
        assert torch.allclose(_extent(drawn_outline).float(), square, atol=2.5), (_extent(drawn_outline), square)
        assert torch.allclose(_extent(drawn_box).float(), square, atol=2.5), (_extent(drawn_box), square)
        moved_tiles += not torch.equal(square, torch.tensor([16.0, 16, 37, 37]))
    assert moved_tiles >= 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--boxes", "1,2,3"], "--boxes takes four numbers X1,Y1,X2,Y2, got '1,2,3'"),
        (["--boxes", "10,10,5,20"], "box 10,10,5,20 must have 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 96 (the image is 128x96)"),
        (["--mask", "MASK"], "the mask must have the image's size 128x96, got 20x20"),
    ],
)
def test_bad_boxes_and_masks_are_one_line_errors(tmp_path, capsys, extra, message):
    _image().save(tmp_path / "image.png")
    Image.new("L", (20, 20)).save(tmp_path / "mask.png")
    extra = [str(tmp_path / "mask.png") if value == "MASK" else value for value in extra]
    output = tmp_path / "grid.png"
    assert main(["grid", "cifar10", str(tmp_path / "image.png"), "-o", str(output), *extra]) == 2
    error = capsys.readouterr().err
    assert error.strip() == f"dada-transforms: error: {message}" and not output.exists()


def test_grid_with_boxes_writes_a_png(tmp_path, capsys):
    _image().save(tmp_path / "image.png")
    output = tmp_path / "grid.png"
    args = ["grid", "cifar10", str(tmp_path / "image.png"), "-o", str(output), "--samples", "3", "--tile-size", "64"]
    assert main([*args, "--boxes", "40,24,72,56", "--boxes", "0,0,10,10"]) == 0
    with Image.open(output) as written:
        assert written.size == GridLayout(4, 4, 64, caption_lines=2).size
        assert ImageChops.difference(written.convert("RGB"), make_grid("cifar10", _image(), samples=3, tile_size=64)).getbbox()
