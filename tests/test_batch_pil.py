"""CPU uint8 batches of large images, and single images, go through PIL's kernels: same bytes as the
tensor kernels (which tests/test_tensor_path.py checks against PIL), chosen only where that holds."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dada_transforms import DADA, OPERATION_NAMES
from dada_transforms.batch import apply_operations
from dada_transforms.batch_pil import PIL_MIN_BATCH_PIXELS, prefers_pil
from dada_transforms.functional_tensor import TensorOptions

FILL, CUTOUT = (200, 30, 90), (10, 250, 128)
EVERY_KIND = [
    [(OPERATION_NAMES[i], 1.0, (0.1 + 0.37 * i) % 1), (OPERATION_NAMES[(i + 7) % 15], 0.8, (0.9 - 0.23 * i) % 1)]
    for i in range(15)
]


def _photos(count: int, make_image, size: tuple[int, int], mode: str) -> torch.Tensor:
    return torch.stack([TF.pil_to_tensor(make_image(*size, mode, seed=seed)) for seed in range(count)])


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("fill", [None, FILL])
def test_pil_route_gives_the_tensor_kernels_bytes(mode, fill, make_image):
    images = _photos(60, make_image, (101, 97), mode)  # 97 x 101 pixels: above the threshold
    transform = DADA(EVERY_KIND, fill=fill, cutout_fill=CUTOUT, generator=torch.Generator().manual_seed(3))
    assert prefers_pil(images, transform.interpolation)
    drawn = transform.draw_params(len(images))
    routed = transform.apply_batch(images, drawn)
    options = TensorOptions(transform.fill, CUTOUT, "nearest", drawn.cutout_centers[:, 0])
    for fixed_shapes in (False, True):
        kernels = apply_operations(
            images, drawn.operations, drawn.applied, drawn.arguments, drawn.cutout_centers, options,
            fixed_shapes=fixed_shapes,
        )
        for row in range(len(images)):
            assert torch.equal(routed[row], kernels[row]), f"image {row} (fixed shapes: {fixed_shapes})"
    assert routed.is_contiguous() and routed.dtype == torch.uint8


def test_pil_route_does_not_modify_its_input(make_image):
    images = _photos(4, make_image, (100, 100), "RGB")
    before = images.clone()
    DADA([[("Invert", 1.0, 0.0), ("Cutout", 1.0, 1.0)]])(images)
    assert torch.equal(images, before)


def test_route_is_chosen_only_where_the_bytes_are_the_same():
    large = torch.zeros(2, 3, 100, 100, dtype=torch.uint8)
    small = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    assert 32 * 32 < PIL_MIN_BATCH_PIXELS <= 100 * 100
    assert prefers_pil(large, "nearest") and prefers_pil(small[:1], "nearest")
    assert not prefers_pil(small, "nearest")  # small images: the batched tensor kernels are faster
    assert not prefers_pil(large, "bilinear")  # PIL's bilinear is not the tensor path's
    assert not prefers_pil(large.float() / 255, "nearest")  # float keeps its precision on the tensor path
    assert not prefers_pil(torch.zeros(2, 2, 100, 100, dtype=torch.uint8), "nearest")
