"""Fill colours: checked once, then on the kernels' 0..255 scale for each image type and channel count
(shared by the PIL and tensor paths)."""

from __future__ import annotations

from collections.abc import Sequence

CUTOUT_FILL = (125, 123, 114)
"""The authors' Cutout colour, in levels 0..255 (the default on every input type)."""

Fill = tuple[float, float, float]


def luminance(rgb: Sequence[float]) -> float:
    """PIL's RGB -> L conversion (ITU-R 601-2): on integer levels its fixed point, rounded; on
    float levels the same weights, unrounded."""
    r, g, b = rgb
    if all(isinstance(value, int) for value in rgb):
        return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    return (r * 19595 + g * 38470 + b * 7471) / 65536


def normalize_fill(fill: float | Sequence[float] | None, name: str = "fill") -> Fill | None:
    """Check a user fill (None, one value, or one value per RGB channel) and return it as RGB, unscaled.

    As torchvision's ``fill``, it is in the value range of the images it fills: levels 0..255 for PIL
    and uint8 images, 0..1 for float images (checked by :func:`fill_levels` when applied).
    """
    if fill is None:
        return None
    values = (fill,) * 3 if isinstance(fill, (int, float)) else tuple(fill)
    if len(values) == 1:
        values = values * 3
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 255 for v in values)
    if len(values) != 3 or not numbers:
        raise ValueError(
            f"{name} must be None, one value or three values in the images' range (0..255, or 0..1 for float "
            f"images), got {fill!r}"
        )
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def fill_levels(rgb: Fill, floating: bool, name: str = "fill") -> tuple[float, ...]:
    """A checked fill on the kernels' 0..255 scale: for float images (in [0, 1]) times 255, unrounded;
    for PIL and uint8 images rounded to integer levels."""
    if not floating:
        return tuple(int(round(v)) for v in rgb)
    if any(v > 1 for v in rgb):
        raise ValueError(
            f"{name} {rgb} is outside float images' range [0, 1]: as torchvision's, the fill is in the images' "
            f"own range (1.0 is white on float images, 255 on uint8 and PIL images)"
        )
    return tuple(v * 255 for v in rgb)


def fill_for_channels(rgb: Sequence[float], channels: int) -> tuple[float, ...]:
    """An RGB fill (on 0..255) as levels for an image of 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels.

    Alpha, where present, is opaque: the filled area is painted, not erased.
    """
    if channels == 1:
        return (luminance(rgb),)
    if channels == 2:
        return (luminance(rgb), 255)
    if channels == 3:
        return tuple(rgb)
    if channels == 4:
        return (*rgb, 255)
    raise ValueError(f"cannot fill an image with {channels} channels; expected 1, 2, 3 or 4")
