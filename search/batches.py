"""The search's fixed (not searched) augmentations on the device, batched, each image its own draw.

Before the policy: RandomCrop (zero padding) and horizontal flip, or, in the
published ImageNet search, RandomResizedCrop (bicubic) and horizontal flip,
then ColorJitter(0.4, 0.4, 0.4). After the policy, in the published ImageNet
search: AlexNet-style PCA lighting noise (0.1). Random parameters are drawn
apart from their application (``draw_*`` then the kernel), as kornia does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dada_transforms.functional_tensor import constant

from .distributed import SINGLE, Processes


def crop_and_flip(
    images: torch.Tensor, padding: int, generator: torch.Generator, flip: bool = True, processes: Processes = SINGLE
) -> torch.Tensor:
    """RandomCrop(size, padding) then RandomHorizontalFlip(0.5) (unless ``flip`` is False), each image its own draw.

    Args:
        images: ``[N, C, H, W]`` on the generator's device (any dtype; uint8 here).
        padding: zero padding on every side before the crop.
        generator: the random source (on ``images.device``).
        processes: under data parallelism, ``images`` is this process's share of
            the global batch: the draws are made for the whole batch from
            ``generator`` and this process keeps its part.
    """
    count, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    total = count * processes.world_size
    top = processes.shard(torch.randint(0, 2 * padding + 1, (total, 1), generator=generator, device=device))
    left = processes.shard(torch.randint(0, 2 * padding + 1, (total, 1), generator=generator, device=device))
    flipped = processes.shard(torch.randint(0, 2, (total, 1), generator=generator, device=device).bool() & flip)
    columns = torch.arange(width, device=device)
    rows = top + torch.arange(height, device=device)
    columns = left + torch.where(flipped, width - 1 - columns, columns)
    return padded[
        torch.arange(count, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]


RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params tries 10 boxes before its central fallback
_CUBIC_A = -0.5  # PIL's bicubic coefficient
_PRECISION_BITS = 22  # PIL's fixed-point fraction bits in 8-bit resampling (32 - 8 - 2)


def draw_resized_crop(
    count: int, height: int, width: int, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """RandomResizedCrop's boxes for ``count`` images of ``height`` x ``width``: ``[N, 4]`` (top, left, height, width).

    The rules of torchvision's ``RandomResizedCrop.get_params`` (scale 0.08-1,
    log-uniform ratio 3/4-4/3, sides rounded half to even, the first of 10 boxes
    that fits, else the central crop of the nearest allowed ratio), drawn for
    every image at once.
    """
    area = height * width
    uniform = torch.rand(2, count, _CROP_ATTEMPTS, generator=generator, device=device, dtype=torch.float64)
    scale = RESIZED_CROP_SCALE[0] + uniform[0] * (RESIZED_CROP_SCALE[1] - RESIZED_CROP_SCALE[0])
    low, high = math.log(RESIZED_CROP_RATIO[0]), math.log(RESIZED_CROP_RATIO[1])
    ratio = (low + uniform[1] * (high - low)).exp()
    widths = (area * scale * ratio).sqrt().round().long()
    heights = (area * scale / ratio).sqrt().round().long()
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first box that fits (0 when none does)
    fallback_width, fallback_height = _central_box(height, width)
    found = fits.any(1)
    box_height = torch.where(found, heights.gather(1, first).squeeze(1), fallback_height)
    box_width = torch.where(found, widths.gather(1, first).squeeze(1), fallback_width)
    corner = torch.rand(count, 2, generator=generator, device=device, dtype=torch.float64)
    top = (corner[:, 0] * (height - box_height + 1)).floor().long().minimum(height - box_height)
    left = (corner[:, 1] * (width - box_width + 1)).floor().long().minimum(width - box_width)
    top = torch.where(found, top, (height - box_height) // 2)
    left = torch.where(found, left, (width - box_width) // 2)
    return torch.stack((top, left, box_height, box_width), 1)


def _central_box(height: int, width: int) -> tuple[int, int]:
    """torchvision's fallback ``(width, height)``: the whole image, cut to the nearest allowed ratio."""
    ratio = width / height
    if ratio < RESIZED_CROP_RATIO[0]:
        return width, int(round(width / RESIZED_CROP_RATIO[0]))
    if ratio > RESIZED_CROP_RATIO[1]:
        return int(round(height * RESIZED_CROP_RATIO[1])), height
    return width, height


def _cubic_taps(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices and PIL's fixed-point weights ``[N, size, 4]`` (int32) of an enlargement of ``length`` pixels to ``size``.

    PIL's bicubic resampling (``Resample.c``: a = -0.5, the taps outside the crop
    dropped and the weights renormalised in double, then rounded to 22 fraction
    bits); ``length <= size`` (an enlargement: the filter keeps its support of 2).
    """
    scale = length.double().view(-1, 1) / size
    centre = (torch.arange(size, device=length.device, dtype=torch.float64) + 0.5) * scale
    first = (centre - 1.5).floor().clamp(min=0)
    last = (centre + 2.5).floor().minimum(length.view(-1, 1).double())  # exclusive
    taps = first.unsqueeze(2) + torch.arange(4, device=length.device, dtype=torch.float64)
    distance = (taps - centre.unsqueeze(2) + 0.5).abs()
    near = ((_CUBIC_A + 2) * distance - (_CUBIC_A + 3)) * distance * distance + 1
    far = (((distance - 5) * distance + 8) * distance - 4) * _CUBIC_A
    weights = torch.where(distance < 1, near, torch.where(distance < 2, far, 0.0)) * (taps < last.unsqueeze(2))
    total = ((weights[..., 0] + weights[..., 1]) + weights[..., 2]) + weights[..., 3]  # PIL's order of the sum
    weights = weights / total.unsqueeze(2) * (1 << _PRECISION_BITS)
    fixed = (weights + torch.where(weights < 0, -0.5, 0.5)).trunc().to(torch.int32)
    indices = taps.long().minimum(length.view(-1, 1, 1) - 1) + start.view(-1, 1, 1)
    return indices, fixed


def _resampled(images: torch.Tensor, dim: int, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One pass of PIL's 8-bit resampling along ``dim`` (2: rows, 3: columns) of uint8 ``[N, C, H, W]``."""
    count, channels = images.shape[:2]
    size = indices.shape[1]
    shape = [count, channels, images.shape[2], images.shape[3]]
    shape[dim] = size * 4
    view = [count, 1, 1, 1]
    view[dim] = size * 4
    gathered = images.to(torch.int32).gather(dim, indices.view(view).expand(shape))
    split = shape[:dim] + [size, 4] + shape[dim + 1 :]
    weight_view = [count, 1, 1, 1, 1]
    weight_view[dim], weight_view[dim + 1] = size, 4
    sums = (gathered.view(split) * weights.view(weight_view)).sum(dim + 1) + (1 << (_PRECISION_BITS - 1))
    return (sums >> _PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


def resized_crop_and_flip(
    images: torch.Tensor, generator: torch.Generator, flip: bool = True, processes: Processes = SINGLE
) -> torch.Tensor:
    """RandomResizedCrop(size, scale 0.08-1, bicubic) then RandomHorizontalFlip(0.5), each image its own draw.

    Args:
        images: uint8 ``[N, C, H, W]`` on the generator's device; the output has the same shape.
        generator: the random source (on ``images.device``).
        flip: False leaves out the flip.
        processes: as for :func:`crop_and_flip`: the boxes and flips are drawn
            for the whole global batch, this process keeps its part.

    Each box (drawn by :func:`draw_resized_crop`) is enlarged on its own with
    PIL's 8-bit bicubic resampling (columns, then rows), as the authors' PIL
    pipeline does. The box is taken from the decoded square image (the file's
    centre crop), not from the whole file.
    """
    count, _, height, width = images.shape
    device = images.device
    total = count * processes.world_size
    boxes = processes.shard(draw_resized_crop(total, height, width, generator, device))
    flipped = processes.shard(torch.randint(0, 2, (total, 1, 1), generator=generator, device=device).bool() & flip)
    columns, column_weights = _cubic_taps(boxes[:, 1], boxes[:, 3], width)
    columns = torch.where(flipped, columns.flip(1), columns)  # a flip reverses the output columns
    column_weights = torch.where(flipped, column_weights.flip(1), column_weights)
    rows, row_weights = _cubic_taps(boxes[:, 0], boxes[:, 2], height)
    return _resampled(_resampled(images, 3, columns, column_weights), 2, rows, row_weights)


def color_jittered(
    images: torch.Tensor, strength: float, generator: torch.Generator, processes: Processes = SINGLE
) -> torch.Tensor:
    """ColorJitter(strength, strength, strength) of uint8 images ``[N, 3, H, W]`` before the policy, rounded to uint8.

    Drawn for the whole global batch, this process keeping its part (as :func:`crop_and_flip`).
    """
    total = images.shape[0] * processes.world_size
    factors, order = draw_color_jitter(total, strength, generator, images.device)
    jittered = color_jitter(images.float().div_(255), processes.shard(factors), processes.shard(order))
    return jittered.mul_(255).round_().to(torch.uint8)


_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
# AlexNet PCA lighting on ImageNet (Krizhevsky et al. 2012), as in fb.resnet.torch and the DADA code
_EIGENVALUES = (0.2175, 0.0188, 0.0045)
_EIGENVECTORS = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


def draw_color_jitter(
    count: int, strength: float, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """ColorJitter(strength, strength, strength)'s random parameters for ``count`` images.

    Returns ``factors`` ``[N, 3]`` (brightness, contrast, saturation), each uniform in
    ``[max(0, 1 - strength), 1 + strength]``, and ``order`` ``[N, 3]``, a random
    permutation of (0, 1, 2) per image (torchvision applies the three in random order).
    """
    low = max(0.0, 1.0 - strength)
    factors = low + torch.rand(count, 3, generator=generator, device=device) * (1.0 + strength - low)
    order = torch.rand(count, 3, generator=generator, device=device).argsort(1)
    return factors, order


def color_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation of float images in [0, 1] ``[N, 3, H, W]``, per image.

    Each image gets its factors in its order, with torchvision's
    ``adjust_brightness`` / ``adjust_contrast`` / ``adjust_saturation`` arithmetic.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"ColorJitter needs RGB images [N, 3, H, W], got {tuple(images.shape)}")
    factors = factors.to(images.dtype)
    current = images
    for position in range(3):
        kind = order[:, position].view(-1, 1, 1, 1)
        factor = factors.gather(1, order[:, position : position + 1]).view(-1, 1, 1, 1)
        red, green, blue = current.unbind(1)  # torchvision's rgb_to_grayscale arithmetic
        grey = (_GREY[0] * red + _GREY[1] * green + _GREY[2] * blue).unsqueeze(1)
        blend_with = torch.where(
            kind == 0, torch.zeros_like(grey), torch.where(kind == 1, grey.mean((2, 3), keepdim=True), grey)
        )
        current = (factor * current + (1 - factor) * blend_with).clamp(0, 1)
    return current


def draw_lighting(
    count: int, standard_deviation: float, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """PCA lighting's random weights ``[N, 3]``, normal with mean 0 and ``standard_deviation``."""
    return torch.randn(count, 3, generator=generator, device=device) * standard_deviation


def lighting(images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Add ``eigenvectors @ (weights * eigenvalues)`` to each image's channels (no clamp, as published)."""
    eigenvalues = constant(_EIGENVALUES, images.dtype, images.device)  # both made once per device
    eigenvectors = constant(sum(_EIGENVECTORS, ()), images.dtype, images.device).view(3, 3)
    shift = (weights.to(images.dtype) * eigenvalues) @ eigenvectors.T
    return images + shift.view(-1, 3, 1, 1)
