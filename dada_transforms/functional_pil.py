"""PIL kernels of the 15 DADA operations.

Every kernel is ``kernel(image, argument, options) -> image`` where ``argument``
is the operation's real argument (already mapped from the magnitude and signed)
and ``options`` carries fills, resampling and the Cutout centre. Each kernel is
one call of PIL's own operation with those arguments.
"""

from __future__ import annotations

from typing import NamedTuple

from PIL import Image, ImageDraw, ImageEnhance, ImageOps


class PilOptions(NamedTuple):
    """Per-application settings for a PIL kernel (fills already in the image's mode)."""

    fill: int | tuple[int, ...] | None
    cutout_fill: int | tuple[int, ...]
    resample: Image.Resampling
    cutout_center: tuple[float, float]  # uniform draws in [0, 1) for x and y


def _affine(image: Image.Image, coefficients: tuple[float, ...], options: PilOptions) -> Image.Image:
    return image.transform(
        image.size, Image.Transform.AFFINE, coefficients, resample=options.resample, fillcolor=options.fill
    )


def shear_x(image: Image.Image, shear: float, options: PilOptions) -> Image.Image:
    return _affine(image, (1, shear, 0, 0, 1, 0), options)


def shear_y(image: Image.Image, shear: float, options: PilOptions) -> Image.Image:
    return _affine(image, (1, 0, 0, shear, 1, 0), options)


def translate_x(image: Image.Image, fraction: float, options: PilOptions) -> Image.Image:
    return _affine(image, (1, 0, fraction * image.width, 0, 1, 0), options)


def translate_y(image: Image.Image, fraction: float, options: PilOptions) -> Image.Image:
    return _affine(image, (1, 0, 0, 0, 1, fraction * image.height), options)


def rotate(image: Image.Image, degrees: float, options: PilOptions) -> Image.Image:
    return image.rotate(degrees, resample=options.resample, fillcolor=options.fill)


def auto_contrast(image: Image.Image, _: float, options: PilOptions) -> Image.Image:
    return ImageOps.autocontrast(image)


def invert(image: Image.Image, _: float, options: PilOptions) -> Image.Image:
    return ImageOps.invert(image)


def equalize(image: Image.Image, _: float, options: PilOptions) -> Image.Image:
    return ImageOps.equalize(image)


def solarize(image: Image.Image, threshold: float, options: PilOptions) -> Image.Image:
    return ImageOps.solarize(image, threshold)


def posterize(image: Image.Image, bits: float, options: PilOptions) -> Image.Image:
    return ImageOps.posterize(image, posterize_bits(bits))


def contrast(image: Image.Image, factor: float, options: PilOptions) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def color(image: Image.Image, factor: float, options: PilOptions) -> Image.Image:
    return ImageEnhance.Color(image).enhance(factor)


def brightness(image: Image.Image, factor: float, options: PilOptions) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def sharpness(image: Image.Image, factor: float, options: PilOptions) -> Image.Image:
    return ImageEnhance.Sharpness(image).enhance(factor)


def cutout(image: Image.Image, fraction: float, options: PilOptions) -> Image.Image:
    box = cutout_box(image.width, image.height, fraction, *options.cutout_center)
    if box is None:
        return image
    image = image.copy()
    ImageDraw.Draw(image).rectangle(box, fill=options.cutout_fill)
    return image


def posterize_bits(argument: float) -> int:
    """Bits kept by Posterize: ``int(argument)``, never below 1 (PIL rejects 0)."""
    return max(1, min(8, int(argument)))


def cutout_box(width: int, height: int, fraction: float, u: float, v: float) -> tuple[int, int, float, float] | None:
    """The Cutout square as the authors' inclusive ``ImageDraw.rectangle`` box ``(x0, y0, x1, y1)``,
    or None for a negative side.

    As in the authors' code: ``side = fraction * width`` (unrounded), centre ``(u * width, v * height)``,
    corner ``int(max(0, centre - side / 2))``, far corner ``min(border, corner + side)``. PIL paints both
    corners and truncates the far one, so ``int(side) + 1`` pixels a side before clipping (one pixel
    at fraction 0).
    """
    side = fraction * width
    if side < 0:
        return None
    x0 = int(max(0.0, u * width - side / 2))
    y0 = int(max(0.0, v * height - side / 2))
    return x0, y0, min(width, x0 + side), min(height, y0 + side)
