"""Boxes and a mask on grid tiles: fitted to a tile as the image is, and drawn with ``torchvision.utils``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as nn_functional
from PIL import Image, ImageOps
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

MAX_BOXES = 256
BOX_COLOUR = "#00ff40"
OUTLINE_COLOUR = "#ff00ff"


def check_boxes(boxes: Sequence[Sequence[float]], width: int, height: int) -> list[tuple[float, ...]]:
    """Boxes ``(x1, y1, x2, y2)`` in pixels of a ``width`` x ``height`` image, checked."""
    if len(boxes) > MAX_BOXES:
        raise ValueError(f"at most {MAX_BOXES} boxes, got {len(boxes)}")
    checked = []
    for box in boxes:
        values = tuple(box)
        if len(values) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"a box is four numbers x1,y1,x2,y2, got {box!r}")
        x1, y1, x2, y2 = values
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise ValueError(
                f"box {','.join(f'{v:g}' for v in values)} must have 0 <= x1 < x2 <= {width} and 0 <= y1 < y2 <= {height} "
                f"(the image is {width}x{height})"
            )
        checked.append(values)
    return checked


def fit_targets(
    size: tuple[int, int], tile_size: int, boxes: Sequence[Sequence[float]] | None, mask: Image.Image | None
) -> dict:
    """Boxes (``BoundingBoxes``) and mask (``Mask``: inside where any channel is non-zero) of an image of ``size`` (w, h),
    moved as ``ImageOps.fit`` crops and scales the image to a square tile."""
    width, height = size
    if width >= height:  # ImageOps.fit's centred crop to the square's aspect
        left, top, side = (width - height) / 2, 0.0, height
    else:
        left, top, side = 0.0, (height - width) / 2, width
    targets = {}
    if boxes:
        scaled = (torch.tensor(boxes, dtype=torch.float32) - torch.tensor([left, top, left, top])) * (tile_size / side)
        fitted = tv_tensors.BoundingBoxes(scaled, format="XYXY", canvas_size=(tile_size, tile_size))
        targets["boxes"] = F.clamp_bounding_boxes(fitted)
    if mask is not None:
        if mask.size != size:
            raise ValueError(f"the mask must have the image's size {width}x{height}, got {mask.width}x{mask.height}")
        fitted_mask = ImageOps.fit(mask.convert("RGB"), (tile_size, tile_size), Image.Resampling.NEAREST)
        targets["mask"] = tv_tensors.Mask((F.pil_to_tensor(fitted_mask).amax(0, keepdim=True) > 0).to(torch.uint8))
    return targets


def draw_targets(image: Image.Image, targets: dict) -> Image.Image:
    """``image`` with its boxes (those of non-zero area) and the outline of its mask drawn on it."""
    picture = F.pil_to_tensor(image.convert("RGB"))
    if "mask" in targets:
        picture = draw_segmentation_masks(picture, _outline(targets["mask"][0].bool()), alpha=1.0, colors=OUTLINE_COLOUR)
    if "boxes" in targets:
        boxes = targets["boxes"].as_subclass(torch.Tensor)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        if len(boxes):
            picture = draw_bounding_boxes(picture, boxes, colors=BOX_COLOUR, width=2)
    return F.to_pil_image(picture)


def _outline(mask: torch.Tensor) -> torch.Tensor:
    """The pixels of ``mask`` [H, W] next to a pixel outside it or the border (8-neighbourhood)."""
    padded = nn_functional.pad(mask[None, None].float(), (1, 1, 1, 1), value=0.0)
    inner = -nn_functional.max_pool2d(-padded, 3, stride=1)[0, 0] > 0.5
    return mask & ~inner
