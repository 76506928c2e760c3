"""A picture of what a policy does: the original image and augmented samples in a labelled grid."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .annotate import check_boxes, draw_targets, fit_targets
from .files import read_regular_file
from .ops import OperationSpec
from .params import draw_one
from .policy import Policy
from .transform import DADA

DEMO_IMAGE_NAME = "chelsea.jpg"
"""The demo photo shipped in ``dada_transforms/assets`` (CC0, see LICENSE-demo.txt there)."""

MIN_TILE_SIZE = 64
MAX_TILE_SIZE = 1024
MAX_SAMPLES = 256
MAX_SEED = 2**64 - 1
MAX_GRID_PIXELS = 40_000_000
"""The largest grid picture, in pixels (about 120 MB in memory), checked before any work."""
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""The largest input image, in pixels, checked from its header before decoding it."""
MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024
"""The largest input image file read."""
_PADDING = 6
_LINE_HEIGHT = 14
_FONT_SIZES = (11, 10, 9, 8)
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def demo_image() -> Image.Image:
    """The demo photo shipped with the package, as an RGB image."""
    with resources.as_file(resources.files("dada_transforms") / "assets" / DEMO_IMAGE_NAME) as path:
        with Image.open(path) as image:
            return image.convert("RGB")


@dataclass(frozen=True)
class GridLayout:
    """Where the tiles of a grid go: ``count`` cells in rows of ``columns``, each a tile and its caption."""

    count: int
    columns: int
    tile_size: int
    caption_lines: int

    @property
    def rows(self) -> int:
        return -(-self.count // self.columns)

    @property
    def cell_size(self) -> tuple[int, int]:
        return self.tile_size + _PADDING, self.tile_size + self.caption_lines * _LINE_HEIGHT + 2 * _PADDING

    @property
    def size(self) -> tuple[int, int]:
        """The grid picture's ``(width, height)``."""
        width, height = self.cell_size
        return self.columns * width + _PADDING, self.rows * height + _PADDING

    def tile_box(self, index: int) -> tuple[int, int, int, int]:
        """The ``(left, top, right, bottom)`` box of tile ``index`` (0 is the original)."""
        width, height = self.cell_size
        left = _PADDING + (index % self.columns) * width
        top = _PADDING + (index // self.columns) * height
        return left, top, left + self.tile_size, top + self.tile_size


def _check_count(value: object, what: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{what} must be an integer {bound}, got {value!r}")
    return value


def applied_label(spec: OperationSpec, argument: float) -> str:
    """A caption for one applied operation with its signed argument, e.g. ``Rotate -13.5 deg``."""
    if not spec.has_argument:
        return spec.name
    text = spec.describe_argument(argument)
    if spec.mirror:
        text = text.replace("+/-", "-" if argument < 0 else "+", 1)
    return f"{spec.name} {text}"


def _fitted(draw: ImageDraw.ImageDraw, text: str, width: int) -> tuple[str, ImageFont.ImageFont]:
    """The text and the largest font that fits ``width`` pixels, shortened with '...' if none does."""
    for size in _FONT_SIZES:
        font = ImageFont.load_default(size=size)
        if draw.textlength(text, font=font) <= width:
            return text, font
    while len(text) > 1 and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "...", font


def _caption(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], lines: Sequence[str]) -> None:
    left, _, right, bottom = box
    for number, line in enumerate(lines):
        text, font = _fitted(draw, line, right - left)
        draw.text((left, bottom + 3 + number * _LINE_HEIGHT), text, fill=_TEXT, font=font)


@dataclass(frozen=True)
class Sample:
    """One augmented image and the captions of the operations applied to it, in order."""

    image: Image.Image
    applied: tuple[str, ...]


def augmented_samples(transform: DADA, image: Image.Image, samples: int, targets: dict | None = None) -> list[Sample]:
    """``samples`` applications of ``transform`` to ``image``, each with the operations it applied.

    With ``targets`` (``"boxes"`` and/or ``"mask"`` of the image), each sample shows them moved by its draw.

    The operations are read by drawing with a copy of the transform's generator state,
    which the transform then consumes identically.
    """
    generator = transform.generator if transform.generator is not None else torch.default_generator
    slots = max(len(sub_policy) for sub_policy in transform.policy)
    result = []
    for _ in range(samples):
        state = generator.get_state()
        applied = draw_one(transform.policy, slots, transform.magnitude_std, generator)
        generator.set_state(state)
        labels = tuple(applied_label(spec, argument) for spec, argument, _ in applied)
        picture = draw_targets(*transform(image, targets)) if targets else transform(image)
        result.append(Sample(picture, labels))
    return result


def make_grid(
    policy: Policy | str | os.PathLike[str],
    image: Image.Image | str | os.PathLike[str] | None = None,
    samples: int = 15,
    columns: int = 4,
    seed: int = 0,
    tile_size: int = 160,
    boxes: Sequence[Sequence[float]] | None = None,
    mask: Image.Image | str | os.PathLike[str] | None = None,
) -> Image.Image:
    """A grid of the original ``image`` (first, labelled "original") and ``samples`` augmented versions.

    The image (default: the demo photo) is cropped to a square of ``tile_size`` pixels
    before augmenting; each sample is captioned with the operations applied to it.
    ``seed`` makes the picture repeatable. ``boxes`` (``(x1, y1, x2, y2)`` in the image's
    pixels) and ``mask`` (an image of the same size, non-zero inside) are drawn on every
    tile, moved as each sample's draw moves them (the draws are the same as without them).
    """
    _check_count(samples, "samples", 1, MAX_SAMPLES)
    _check_count(columns, "columns", 1)
    _check_count(tile_size, "tile_size", MIN_TILE_SIZE, MAX_TILE_SIZE)
    _check_count(seed, "seed", 0, MAX_SEED)
    transform = DADA(policy, generator=torch.Generator().manual_seed(seed))
    slots = max(len(sub_policy) for sub_policy in transform.policy)
    layout = GridLayout(samples + 1, columns, tile_size, caption_lines=slots)
    width, height = layout.size
    if width * height > MAX_GRID_PIXELS:
        raise ValueError(
            f"the grid would be {width}x{height} pixels, over the limit of {MAX_GRID_PIXELS:,}: "
            f"use fewer samples or columns ({columns} columns for {samples + 1} tiles) or a smaller tile size"
        )
    opened = _open_image(image)
    tile = ImageOps.fit(opened, (tile_size, tile_size), Image.Resampling.LANCZOS)
    grid = Image.new("RGB", layout.size, _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    targets = _grid_targets(opened.size, tile_size, boxes, mask)
    captioned = [(draw_targets(tile, targets) if targets else tile, ("original",))] + [
        (sample.image, sample.applied or ("(no operation applied)",))
        for sample in augmented_samples(transform, tile, samples, targets)
    ]
    for index, (picture, caption) in enumerate(captioned):
        box = layout.tile_box(index)
        grid.paste(picture, box[:2])
        _caption(draw, box, caption)
    return grid


def _open_image(image: Image.Image | str | os.PathLike[str] | None) -> Image.Image:
    if image is None:
        return demo_image()
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    content = read_regular_file(image, MAX_IMAGE_FILE_BYTES, "image")  # never a FIFO or a device
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            with Image.open(io.BytesIO(content)) as opened:
                if opened.width * opened.height > MAX_IMAGE_PIXELS:
                    raise ValueError(
                        f"image {str(image)!r} is {opened.width}x{opened.height} pixels, over the limit of "
                        f"{MAX_IMAGE_PIXELS:,}: shrink it first"
                    )
                return opened.convert("RGB")
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {str(image)!r}: {error}") from None


def _grid_targets(
    size: tuple[int, int],
    tile_size: int,
    boxes: Sequence[Sequence[float]] | None,
    mask: Image.Image | str | os.PathLike[str] | None,
) -> dict:
    """The boxes and mask of an image of ``size`` fitted to the tile, as DADA moves them; empty without either."""
    if boxes is None and mask is None:
        return {}
    return fit_targets(size, tile_size, check_boxes(boxes or [], *size), None if mask is None else _open_image(mask))
