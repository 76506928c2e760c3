"""The search's fixed (not searched) augmentations on the device, batched, each image its own draw.

Before the policy: RandomCrop (zero padding) and horizontal flip. After the
policy, in the published ImageNet search: ColorJitter(0.4, 0.4, 0.4) and
AlexNet-style PCA lighting noise (0.1). Random parameters are drawn apart from
their application (``draw_*`` then the kernel), as kornia does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    weights = torch.tensor(_GREY, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    factors = factors.to(images.dtype)
    current = images
    for position in range(3):
        kind = order[:, position].view(-1, 1, 1, 1)
        factor = factors.gather(1, order[:, position : position + 1]).view(-1, 1, 1, 1)
        grey = (current * weights).sum(1, keepdim=True)
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
    eigenvalues = torch.tensor(_EIGENVALUES, dtype=images.dtype, device=images.device)
    eigenvectors = torch.tensor(_EIGENVECTORS, dtype=images.dtype, device=images.device)
    shift = (weights.to(images.dtype) * eigenvalues) @ eigenvectors.T
    return images + shift.view(-1, 3, 1, 1)
