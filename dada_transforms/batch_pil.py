"""CPU uint8 image tensors through PIL's kernels: when to, and the conversions without copies.

With nearest resampling the tensor kernels reproduce PIL's bytes exactly, so on the CPU
the batched application may hand each image to PIL instead: the same drawn parameters
give the same bytes, and PIL's SIMD C kernels (its affine warp above all) beat the
tensor kernels on one image, or on a batch of large images. ``DADA.apply_batch``
chooses this route by :func:`prefers_pil`; accelerators and ``torch.compile`` never take it.
"""

from __future__ import annotations

import torch
from PIL import Image

PIL_MIN_BATCH_PIXELS = 96 * 96
"""From this image size (height x width) up, CPU uint8 batches go through PIL (measured
crossover on a 2-core x86-64 machine; below it the batched tensor kernels are faster)."""

_CHANNELS = (1, 3)  # L and RGB


def prefers_pil(images: torch.Tensor, interpolation: str) -> bool:
    """Whether PIL's kernels give ``images`` the same bytes faster than the tensor kernels."""
    return (
        images.device.type == "cpu"
        and images.dtype == torch.uint8
        and interpolation == "nearest"
        and images.shape[-3] in _CHANNELS
        and (images.shape[0] == 1 or images.shape[-2] * images.shape[-1] >= PIL_MIN_BATCH_PIXELS)
        and not torch.compiler.is_compiling()
    )


def pil_image_of(planes: torch.Tensor) -> Image.Image:
    """A ``[C, H, W]`` uint8 CPU tensor (C in {1, 3}) as a PIL image (L or RGB): its planes wrapped
    as L images without copying, then merged (much faster than transposing to HWC)."""
    planes = planes.contiguous()
    size = (planes.shape[-1], planes.shape[-2])
    bands = [Image.frombuffer("L", size, plane.numpy(), "raw", "L", 0, 1) for plane in planes]
    return bands[0].copy() if len(bands) == 1 else Image.merge("RGB", bands)


def planes_of(image: Image.Image) -> torch.Tensor:
    """An L or RGB PIL image as a ``[C, H, W]`` uint8 tensor (band by band: no transposition)."""
    bands = [torch.frombuffer(bytearray(band.tobytes()), dtype=torch.uint8) for band in image.split()]
    return torch.stack(bands).view(len(bands), image.height, image.width)
