"""The pre-policy pipeline on the device: per-sample RandomCrop (zero padding) and horizontal flip, batched."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_and_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(size, padding) then RandomHorizontalFlip(0.5), each image its own draw.

    Args:
        images: ``[N, C, H, W]`` on the generator's device (any dtype; uint8 here).
        padding: zero padding on every side before the crop.
        generator: the random source (on ``images.device``).
    """
    count, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    top = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    flip = torch.randint(0, 2, (count, 1), generator=generator, device=device).bool()
    columns = torch.arange(width, device=device)
    rows = top + torch.arange(height, device=device)
    columns = left + torch.where(flip, width - 1 - columns, columns)
    return padded[
        torch.arange(count, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]
