"""Fill colours adapted to an image's channels (shared by the PIL and tensor paths)."""

from __future__ import annotations

from collections.abc import Sequence

CUTOUT_FILL = (125, 123, 114)


def luminance(rgb: Sequence[int]) -> int:
    """PIL's RGB -> L conversion (ITU-R 601-2, fixed point, rounded)."""
    r, g, b = rgb
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


def normalize_fill(fill: int | Sequence[int] | None, name: str = "fill") -> tuple[int, int, int] | None:
    """Check a user fill (None, one level, or an RGB triple of 0..255) and return it as RGB."""
    if fill is None:
        return None
    values = (fill,) * 3 if isinstance(fill, (int, float)) else tuple(fill)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(isinstance(v, (int, float)) and 0 <= v <= 255 for v in values):
        raise ValueError(f"{name} must be None, one level or three levels in [0, 255], got {fill!r}")
    return tuple(int(round(v)) for v in values)  # type: ignore[return-value]


def fill_for_channels(rgb: Sequence[int], channels: int) -> tuple[int, ...]:
    """An RGB fill as levels for an image of 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels.

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
