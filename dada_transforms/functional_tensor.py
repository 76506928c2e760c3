"""Batched tensor kernels of the 15 DADA operations.

Every kernel is ``kernel(images, arguments, options) -> images`` with ``images``
of shape ``[N, C, H, W]`` (uint8 in [0, 255] or floating point in [0, 1], C in
{1, 3}) and ``arguments`` a float tensor ``[N]`` of real, signed arguments, one
per image. The arithmetic follows PIL's, so that on uint8 images (nearest
resampling) every kernel gives PIL's bytes. Colour operations are defined once as
maps of levels (``*_levels``): a lookup table per image and channel on uint8, the
map itself on float. No kernel reads a value back to the host.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .fill import fill_for_channels


class TensorOptions(NamedTuple):
    """Per-batch settings for the tensor kernels."""

    fill: tuple[float, float, float] | None  # uncovered areas, RGB on 0..255 (integers for uint8); None = black
    cutout_fill: tuple[float, float, float]
    interpolation: str  # "nearest", "bilinear" or "bicubic"
    cutout_centers: torch.Tensor  # [N, 2] uniform draws in [0, 1) for x and y


def constant(values: Sequence[float], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)``, made once per values, dtype and device, never
    modified: a tensor from Python numbers is a host-to-device copy, and off the CPU from pageable
    memory the host waits for it; a batch must not. (Under ``torch.compile``, a constant of the graph.)"""
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=dtype, device=device)
    return _cached_constant(tuple(values), dtype, torch.device(device))


@functools.lru_cache(maxsize=256)
def _cached_constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor even if first made under inference mode (autograd may save it)
        return torch.tensor(values, dtype=dtype, device=device)


def _fill_tensor(rgb: tuple[float, float, float] | None, images: torch.Tensor) -> torch.Tensor:
    """The fill as a ``[1, C, 1, 1]`` float tensor on the images' scale."""
    levels = fill_for_channels(rgb or (0, 0, 0), images.shape[-3])
    if images.dtype != torch.uint8:
        levels = tuple(level / 255.0 for level in levels)
    return constant(levels, torch.float32, images.device).view(1, -1, 1, 1)


def _to_images_dtype(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Float results back to the images' dtype: uint8 truncates as PIL does (through int16, the same
    values: PyTorch's CPU cast of float to uint8 is not vectorised, about 4x slower)."""
    if like.dtype == torch.uint8:
        return values.clamp_(0, 255).to(torch.int16).to(torch.uint8)
    return values.clamp_(0, 1).to(like.dtype)


def select(mask: torch.Tensor, chosen: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask, chosen, other)``; integer images use ``other + (chosen - other) * mask``
    (exact in wrapping integer arithmetic; on CPU several times faster than ``where``, and than
    ``chosen * mask + other * ~mask`` on large images)."""
    if chosen.is_floating_point():
        return torch.where(mask, chosen, other)
    return ((chosen - other) * mask).add_(other)


def _quantized(kernel):
    """Run a uint8-only kernel on float images by quantising to 8 bits and back."""

    def wrapper(images: torch.Tensor, arguments: torch.Tensor, options: TensorOptions) -> torch.Tensor:
        if images.dtype == torch.uint8:
            return kernel(images, arguments, options)
        as_uint8 = images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        return kernel(as_uint8, arguments, options).to(images.dtype).div_(255)

    wrapper.__name__ = kernel.__name__
    wrapper.__doc__ = kernel.__doc__
    wrapper.levels_of = kernel.levels_of
    wrapper.integer = kernel.integer
    return wrapper


# ---------------------------------------------------------------- geometric


def nearest_sources(coefficients: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The source pixel of every output pixel, exactly as PIL's nearest affine computes it, as ``[N, H * W]``
    int64 indices into the image padded with a border of one pixel (which every source outside maps to);
    ``coefficients`` as for :func:`affine`.

    PIL uses 16.16 fixed point (``affine_fixed``) unless the matrix has no shear or rotation
    terms, where it uses doubles (``ImagingScaleAffine``). Both are reproduced in 16.16: the
    floor of a double ``t + k x`` is the fixed-point result with the start ``t`` truncated
    instead of rounded, exactly when ``k`` is a multiple of 2**-16 (as every scale-only
    matrix of the DADA operations: translations, of step 1). Each source coordinate (column,
    row), plus one for the border, is a term along x plus a term along y, so only their sum
    has the full size.
    """
    integer = torch.int32 if max(height, width) < 16384 else torch.int64  # as PIL, 16.16 fits 32 bits
    coefficients = coefficients.to(torch.float64)
    centres = coefficients[:, 2::3] + coefficients[:, 0::3] * 0.5 + coefficients[:, 1::3] * 0.5  # pixel (0, 0)
    truncated_start = constant((0.5, 0.5, 0.0), torch.float64, coefficients.device)
    rounding = torch.where(coefficients[:, 1:4:2].eq(0).all(1).view(-1, 1, 1), truncated_start, 0.5)  # scale only
    fixed = torch.cat((coefficients.view(-1, 2, 3)[..., :2], centres.unsqueeze(-1)), -1).mul_(65536.0).add_(rounding)
    fixed = fixed.floor_().clamp_(-(2**31), 2**31 - 1).to(integer)  # [N, coordinate, (x step, y step, start)]
    positions = torch.arange(max(height, width), device=coefficients.device, dtype=integer)
    terms = fixed[..., :2, None] * positions  # [N, coordinate, along x or y, position]
    terms[:, :, 0].add_(fixed[..., 2:] + 65536)
    column, row = (terms[:, :, 0, None, :width] + terms[:, :, 1, :height, None]).bitwise_right_shift_(16).unbind(1)
    return row.clamp_(0, height + 1).mul_(width + 2).add_(column.clamp_(0, width + 1)).long().view(-1, height * width)


def warp_nearest(images: torch.Tensor, sources: torch.Tensor, options: TensorOptions) -> torch.Tensor:
    """Each output pixel from its source pixel, ``sources`` from :func:`nearest_sources` (uncovered: the fill)."""
    n, channels, height, width = images.shape
    levels = fill_for_channels(options.fill or (0, 0, 0), channels)
    if images.dtype == torch.uint8 and len(set(levels)) == 1:  # one level: a constant pad (cheaper)
        padded = F.pad(images, (1, 1, 1, 1), value=levels[0])
    else:
        fill = _fill_tensor(options.fill, images).to(images.dtype)
        padded = fill.expand(n, channels, height + 2, width + 2).clone()  # uncovered: the fill
        padded[..., 1:-1, 1:-1] = images
    index = sources.to(images.device).view(n, 1, height * width).expand(n, channels, height * width)
    return padded.view(n, channels, -1).gather(2, index).view_as(images)


def affine(images: torch.Tensor, coefficients: torch.Tensor, options: TensorOptions) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE, (a, b, c, d, e, f))`` for each image.

    ``coefficients`` is ``[N, 6]``: the output pixel centre (x, y) samples the
    input at ``(a x + b y + c, d x + e y + f)``.
    """
    n, channels, height, width = images.shape
    if options.interpolation == "nearest":
        return warp_nearest(images, nearest_sources(coefficients.to(images.device), height, width), options)
    fill = _fill_tensor(options.fill, images)
    coefficients = coefficients.to(device=images.device, dtype=torch.float32).view(n, 6, 1, 1)
    a, b, c, d, e, f = coefficients.unbind(1)
    xs = torch.arange(width, device=images.device, dtype=torch.float32).add_(0.5).view(1, 1, width)
    ys = torch.arange(height, device=images.device, dtype=torch.float32).add_(0.5).view(1, height, 1)
    grid = torch.stack(((a * xs + b * ys + c) * (2.0 / width) - 1.0, (d * xs + e * ys + f) * (2.0 / height) - 1.0), -1)
    work = images.float()
    coverage = torch.ones_like(work[:, :1])
    sampled = F.grid_sample(
        torch.cat((work, coverage), 1), grid, mode=options.interpolation, padding_mode="zeros", align_corners=False
    )
    values, covered = sampled[:, :channels], sampled[:, channels:].clamp(0, 1)
    values = values + (1 - covered) * fill
    if images.dtype == torch.uint8:
        values = values.round_()
    return _to_images_dtype(values, images)


def _affine_rows(*columns: torch.Tensor) -> torch.Tensor:
    return torch.stack(columns, dim=1).to(torch.float64)


def shear_x_coefficients(shears: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL affine coefficients ``[N, 6]`` of ShearX: ``(1, shear, 0, 0, 1, 0)``."""
    one, zero = torch.ones_like(shears), torch.zeros_like(shears)
    return _affine_rows(one, shears, zero, zero, one, zero)


def shear_y_coefficients(shears: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL affine coefficients of ShearY: ``(1, 0, 0, shear, 1, 0)``."""
    one, zero = torch.ones_like(shears), torch.zeros_like(shears)
    return _affine_rows(one, zero, zero, shears, one, zero)


def translate_x_coefficients(fractions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL affine coefficients of TranslateX: ``(1, 0, fraction * width, 0, 1, 0)``."""
    one, zero = torch.ones_like(fractions), torch.zeros_like(fractions)
    return _affine_rows(one, zero, fractions * width, zero, one, zero)


def translate_y_coefficients(fractions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL affine coefficients of TranslateY: ``(1, 0, 0, 0, 1, fraction * height)``."""
    one, zero = torch.ones_like(fractions), torch.zeros_like(fractions)
    return _affine_rows(one, zero, zero, zero, one, fractions * height)


def rotate_coefficients(degrees: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL affine coefficients of ``Image.rotate(degrees)`` about the centre, without expansion."""
    angle = -degrees.to(torch.float64) * (math.pi / 180.0)
    cos, sin = angle.cos(), angle.sin()
    center_x, center_y = width / 2.0, height / 2.0
    offset_x = cos * -center_x + sin * -center_y + center_x
    offset_y = -sin * -center_x + cos * -center_y + center_y
    return _affine_rows(cos, sin, offset_x, -sin, cos, offset_y)


def _affine_kernel(coefficients_of):
    """The batched kernel of a geometric operation, from its coefficient function."""

    def kernel(images: torch.Tensor, arguments: torch.Tensor, options: TensorOptions) -> torch.Tensor:
        return affine(images, coefficients_of(arguments, *images.shape[-2:]), options)

    kernel.__name__ = coefficients_of.__name__.replace("_coefficients", "")
    kernel.__doc__ = coefficients_of.__doc__
    return kernel


shear_x = _affine_kernel(shear_x_coefficients)
shear_y = _affine_kernel(shear_y_coefficients)
translate_x = _affine_kernel(translate_x_coefficients)
translate_y = _affine_kernel(translate_y_coefficients)
rotate = _affine_kernel(rotate_coefficients)


# ---------------------------------------------------------------- colour


def _lookup(images: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Apply a per-(image, channel) lookup table ``[N, C, 256]`` of uint8 to uint8 images."""
    n, channels = images.shape[:2]
    offsets = torch.arange(0, n * channels * _LEVELS, _LEVELS, device=images.device, dtype=torch.int32)
    index = images.reshape(n, channels, -1).int().add_(offsets.view(n, channels, 1))  # into the flat tables
    return tables.reshape(-1).index_select(0, index.view(-1)).view_as(images)


def _grey(images: torch.Tensor, work: torch.Tensor | None = None) -> torch.Tensor:
    """PIL's ``convert("L")`` as ``[N, 1, H, W]`` float32 (integer levels for uint8); ``work``: the
    images as float32, if at hand.

    On uint8, PIL's ``(r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16`` is computed in float32,
    exactly: every partial sum is an integer below 2**24.
    """
    work = images.float() if work is None else work
    if images.shape[1] == 1:
        return work
    if images.dtype == torch.uint8:  # one pass per channel (twice as fast as a weighted sum over channels)
        red, green, blue = work.unbind(1)
        grey = (red * 19595.0).add_(green, alpha=38470.0).add_(blue, alpha=7471.0)
        return grey.add_(0x8000).mul_(1 / 65536).floor_().unsqueeze(1)
    r, g, b = work.unbind(1)
    return (r * (19595 / 65536) + g * (38470 / 65536) + b * (7471 / 65536)).unsqueeze(1)


def _blend(degenerate: torch.Tensor, images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)`` in float32, one factor per image (unrounded)."""
    factors = factors.to(device=images.device, dtype=torch.float32).view(-1, *(1,) * (images.ndim - 1))
    return ((images.float() - degenerate) * factors).add_(degenerate)  # degenerate + factor * (image - degenerate)


# A colour operation is defined once, as a map of levels on the 0..255 scale:
# ``levels_of(levels, images, arguments)`` with ``levels`` ``[N or 1, C or 1, L]``
# float and per-image statistics read from ``images`` ``[N, C, H, W]``. On uint8
# images it is evaluated on the 256 levels to give a lookup table per image and
# channel (so that any mix of colour operations is one gather); on float images
# it is evaluated on the pixels themselves.

_LEVELS = 256


def colour_table(levels_of, images: torch.Tensor, arguments: torch.Tensor) -> torch.Tensor:
    """The ``[N, C, 256]`` uint8 lookup table of a colour operation on uint8 images (truncated as PIL)."""
    levels = torch.arange(_LEVELS, device=images.device, dtype=torch.float32).view(1, 1, _LEVELS)
    table = levels_of(levels, images, arguments).expand(*images.shape[:2], _LEVELS)
    return table.clamp(0, 255).to(torch.uint8)


def lookup_levels(images: torch.Tensor, runs: Sequence[tuple[Callable, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Consecutive runs of uint8 ``images``, each through its own colour operation, with one gather.

    ``runs`` holds, per run, the operation's map of levels, the run's images and their arguments
    (the runs' images, concatenated, are ``images``).
    """
    levels = torch.arange(_LEVELS, device=images.device, dtype=torch.float32).view(1, 1, _LEVELS)
    channels = images.shape[1]
    tables = torch.cat([
        levels_of(levels, run, arguments).expand(run.shape[0], channels, _LEVELS)
        for levels_of, run, arguments in runs
    ])
    return _lookup(images, _to_images_dtype(tables, images))


def _colour_kernel(levels_of, integer: bool = False):
    """The batched kernel of a colour operation, from its map of levels; an ``integer`` map also
    takes uint8 levels, and is applied to uint8 pixels directly (cheaper than a table on the CPU)."""

    def kernel(images: torch.Tensor, arguments: torch.Tensor, options: TensorOptions) -> torch.Tensor:
        if images.dtype == torch.uint8 and integer:
            return levels_of(images.reshape(*images.shape[:2], -1), images, arguments).view_as(images)
        if images.dtype == torch.uint8:
            return _lookup(images, colour_table(levels_of, images, arguments))
        n, channels = images.shape[:2]
        work = torch.float64 if images.dtype == torch.float64 else torch.float32
        levels = images.reshape(n, channels, -1).to(work) * 255
        result = levels_of(levels, images, arguments) / 255
        return result.clamp_(0, 1).to(images.dtype).view_as(images)

    kernel.__name__ = levels_of.__name__.replace("_levels", "")
    kernel.__doc__ = levels_of.__doc__
    kernel.levels_of = levels_of
    kernel.integer = integer
    return kernel


def auto_contrast_levels(levels: torch.Tensor, images: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.autocontrast``: stretch each channel's [min, max] to the full range."""
    n, channels = images.shape[:2]
    flat = images.reshape(n, channels, -1)
    if images.dtype == torch.uint8 and torch.compiler.is_compiling():  # inductor's CPU amin of uint8 is wrong
        flat = flat.int()
    low = flat.amin(2, keepdim=True).double()
    high = flat.amax(2, keepdim=True).double()
    if images.dtype != torch.uint8:
        low, high = low * 255, high * 255
        stretched = (levels - low.to(levels.dtype)) * (255 / (high - low).clamp(min=1e-12)).to(levels.dtype)
        return torch.where(high > low, stretched, levels)
    scale = torch.full_like(low, 255.0) / (high - low).clamp(min=1)  # a true division, as PIL's double
    exact = levels.double()
    stretched = (exact * scale - low * scale).floor_().clamp_(0, 255)
    return torch.where(high > low, stretched, exact).to(levels.dtype)


def invert_levels(levels: torch.Tensor, images: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.invert``."""
    return 255 - levels


def equalize_levels(levels: torch.Tensor, images: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize``, per image and channel (on uint8 images)."""
    n, channels = images.shape[:2]
    flat = images.reshape(n, channels, -1)
    pixels = flat.long()
    histogram = torch.zeros(n, channels, _LEVELS, device=images.device, dtype=torch.int32)
    histogram = histogram.scatter_add_(2, pixels, torch.ones_like(pixels, dtype=torch.int32))
    if torch.compiler.is_compiling():  # as for auto_contrast_levels' amin: no inductor CPU reduction of uint8
        flat = flat.int()
    last = histogram.gather(2, flat.amax(2, keepdim=True).long())  # the count of the highest level used
    step = (flat.shape[-1] - last) // 255
    below = histogram.cumsum(2, dtype=torch.int32) - histogram
    # PIL's (step // 2 + below) // step: the floor of a double quotient of integers below 2**31 is exact
    tables = ((step // 2 + below).double() / step.clamp(min=1)).floor_().clamp_(max=255).to(levels.dtype)
    equalized = tables.gather(2, levels.long().expand(n, channels, levels.shape[-1]))
    return torch.where(step > 0, equalized, levels)


def solarize_levels(levels: torch.Tensor, images: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.solarize``: invert every level >= threshold (on 0..256)."""
    thresholds = thresholds.to(device=levels.device, dtype=torch.float64).view(-1, 1, 1)
    if levels.dtype == torch.uint8:
        # an integer level is >= a threshold exactly when it is >= the threshold's ceiling (compared in
        # int16, cheaper than float64); 255 - level is level ^ 255: a mask product, cheaper than where
        inverted = levels >= thresholds.ceil().clamp_(0, 256).to(torch.int16)
        return levels ^ inverted.to(torch.uint8).mul_(255)
    inverted = levels >= thresholds  # compared in float64, as PIL's Python
    return torch.where(inverted, 255 - levels, levels)


def posterize_levels(levels: torch.Tensor, images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.posterize`` keeping ``int(bits)`` bits (at least 1), on integer levels."""
    kept = bits.to(device=levels.device).trunc().clamp(1, 8).long()
    masks = (_LEVELS - (1 << (8 - kept))).view(-1, 1, 1)
    if levels.dtype == torch.uint8:
        return levels & masks.to(torch.uint8)
    return (levels.long() & masks).to(levels.dtype)


def contrast_levels(levels: torch.Tensor, images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageEnhance.Contrast``: blend with the rounded mean grey level."""
    grey = _grey(images)
    if images.dtype == torch.uint8:  # PIL's mean of integer levels, summed exactly whatever the backend
        mean = (grey.sum(dim=(1, 2, 3), dtype=torch.float64) / grey[0].numel() + 0.5).floor().float()
    else:
        mean = grey.mean(dim=(1, 2, 3)) * 255
    mean = mean.view(-1, 1, 1)
    return _blend(mean, levels, factors).to(levels.dtype)


def brightness_levels(levels: torch.Tensor, images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageEnhance.Brightness``: blend with black."""
    return _blend(torch.zeros((), device=levels.device), levels, factors).to(levels.dtype)


auto_contrast = _colour_kernel(auto_contrast_levels)
invert = _colour_kernel(invert_levels, integer=True)
equalize = _quantized(_colour_kernel(equalize_levels))
solarize = _colour_kernel(solarize_levels, integer=True)
posterize = _quantized(_colour_kernel(posterize_levels, integer=True))
contrast = _colour_kernel(contrast_levels)
brightness = _colour_kernel(brightness_levels)


def color(images: torch.Tensor, factors: torch.Tensor, options: TensorOptions) -> torch.Tensor:
    """PIL's ``ImageEnhance.Color``: blend with the greyscale image."""
    work = images.float()
    return _to_images_dtype(_blend(_grey(images, work), work, factors), images)


def sharpness(images: torch.Tensor, factors: torch.Tensor, options: TensorOptions) -> torch.Tensor:
    """PIL's ``ImageEnhance.Sharpness``: blend with the SMOOTH-filtered image (borders kept).

    SMOOTH is the 3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13: the 3x3 box sum plus
    four times the centre, over 13. On integer levels the sum is an exact integer, and
    S / 13 never lies on a half, so rounding it gives PIL's result exactly.
    """
    height, width = images.shape[-2:]
    if height < 3 or width < 3:
        return images.clone()
    work = images.float()
    rows = (work[..., :-2] + work[..., 1:-1]).add_(work[..., 2:])
    box_sum = (rows[..., :-2, :] + rows[..., 1:-1, :]).add_(rows[..., 2:, :])
    smoothed = box_sum.add_(work[..., 1:-1, 1:-1], alpha=4).div_(13)
    if images.dtype == torch.uint8:
        smoothed = smoothed.round_()
    result = images.clone()  # the border is the degenerate image's too: the blend keeps it
    result[..., 1:-1, 1:-1] = _to_images_dtype(_blend(smoothed, work[..., 1:-1, 1:-1], factors), images)
    return result


def cutout(images: torch.Tensor, fractions: torch.Tensor, options: TensorOptions) -> torch.Tensor:
    """Paint the authors' Cutout square at each image's drawn centre (see
    :func:`~dada_transforms.functional_pil.cutout_box`): corner ``int(max(0, centre - side / 2))``
    with the unrounded ``side = fraction * W``, every pixel from the corner up to ``corner + side``
    inclusive, clipped at the border (``int(side) + 1`` pixels a side, as ``ImageDraw.rectangle``)."""
    height, width = images.shape[-2:]
    device = images.device
    side = (fractions.to(device=device, dtype=torch.float64) * width).view(-1, 1, 1)
    sizes = constant((width, height), torch.float64, device)
    centers = options.cutout_centers.to(device=device, dtype=torch.float64)
    corners = (centers * sizes - side.view(-1, 1) / 2).clamp_(min=0).floor_().unsqueeze(-1)  # [N, x or y, 1]
    positions = torch.arange(max(height, width), device=device, dtype=torch.float64)
    inside = (positions >= corners) & (positions <= corners + side) & (side >= 0)  # [N, x or y, position]
    mask = inside[:, 1, :height, None] & inside[:, 0, None, :width]  # one full-size pass
    fill = _fill_tensor(options.cutout_fill, images).to(images.dtype)
    return select(mask.unsqueeze(1), fill, images)
