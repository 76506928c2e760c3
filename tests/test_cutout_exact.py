"""The Cutout operation paints exactly the authors' rectangle, on every path.

The reference is the authors' ``CutoutAbs`` restated (design notes, sections 2 and 4):
``v = magnitude * 0.2 * width`` unrounded, corner ``int(max(0, centre - v / 2))``, far
corner ``min(border, corner + v)``, painted by ``PIL.ImageDraw.Draw(img).rectangle``
(both corners included, the far one truncated: ``int(v) + 1`` pixels, one at magnitude 0).
"""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw

from dada_transforms import DADA
from dada_transforms.batch import apply_operations
from dada_transforms.functional_tensor import TensorOptions
from dada_transforms.search.augmentation import AugmentationDraw, AugmentationParameters
from dada_transforms.search.relax import DiscreteDraw
from dada_transforms.search.space import SUB_POLICIES

FILL = (10, 250, 128)
MAGNITUDES = (0.0, 0.5, 1.0)
SIZES = ((20, 20), (23, 11), (9, 30), (40, 25))  # (width, height)


def authors_cutout(image: Image.Image, magnitude: float, u: float, v: float, fill=FILL) -> Image.Image:
    width, height = image.size
    side = magnitude * 0.2 * width
    x0 = int(max(0, u * width - side / 2.0))
    y0 = int(max(0, v * height - side / 2.0))
    image = image.copy()
    ImageDraw.Draw(image).rectangle((x0, y0, min(width, x0 + side), min(height, y0 + side)), fill)
    return image


def _centres() -> list[tuple[float, float]]:
    """Centres in the middle, at every border and corner (the square clipped there)."""
    return [(0.5, 0.5), (0.0, 0.0), (0.999, 0.999), (0.01, 0.97), (0.98, 0.3), (0.37, 0.61)]


@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("size", SIZES)
def test_pil_path_paints_the_authors_rectangle(magnitude, size, make_image):
    image = make_image(*size)
    transform = DADA([[("Cutout", 1.0, magnitude)]], cutout_fill=FILL, generator=torch.Generator())
    painted_pixels = set()
    for seed in range(12):
        transform.generator.manual_seed(seed)
        u, v = transform.draw_params(1).cutout_centers[0, 0].tolist()  # the PIL path reads the same numbers
        transform.generator.manual_seed(seed)
        result = transform(image)
        expected = authors_cutout(image, magnitude, u, v)
        assert result.tobytes() == expected.tobytes(), (seed, u, v)
        painted_pixels.add(sum(a != b for a, b in zip(result.tobytes(), image.tobytes())))
    assert 0 not in painted_pixels  # one pixel at least, even at magnitude 0


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA"])
def test_pil_path_other_modes(mode, make_image):
    image = make_image(21, 13, mode=mode)
    transform = DADA([[("Cutout", 1.0, 0.5)]], cutout_fill=FILL, generator=torch.Generator().manual_seed(0))
    u, v = transform.draw_params(1).cutout_centers[0, 0].tolist()
    transform.generator.manual_seed(0)
    level = Image.new("RGB", (1, 1), FILL).convert("L").getpixel((0, 0))  # PIL's grey of the RGB fill
    fill = {"L": level, "LA": (level, 255), "RGBA": (*FILL, 255)}[mode]  # alpha painted opaque
    assert transform(image).tobytes() == authors_cutout(image, 0.5, u, v, fill).tobytes()


def _batch(size, make_image):
    return torch.stack([TF.pil_to_tensor(make_image(*size, seed=seed)) for seed in range(len(_centres()))])


def _expected(images: torch.Tensor, magnitude: float, centres=None, fill=FILL) -> torch.Tensor:
    """Each image through the authors' Cutout at its centre (default: :func:`_centres`)."""
    return torch.stack([
        TF.pil_to_tensor(authors_cutout(TF.to_pil_image(image), magnitude, u, v, fill))
        for image, (u, v) in zip(images, _centres() if centres is None else centres.tolist())
    ])


@pytest.mark.parametrize("fixed_shapes", [False, True])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("size", SIZES)
def test_tensor_strategies_paint_the_authors_rectangle(size, magnitude, dtype, fixed_shapes, make_image):
    images = _batch(size, make_image)
    count = len(images)
    operations = torch.full((count, 1), 14)  # Cutout's index in the paper's order
    arguments = torch.full((count, 1), magnitude * 0.2, dtype=torch.float64)
    centres = torch.tensor(_centres(), dtype=torch.float64).view(count, 1, 2)
    options = TensorOptions(None, FILL, "nearest", centres[:, 0])
    scaled = images if dtype == torch.uint8 else images.to(dtype) / 255
    applied = torch.ones(count, 1, dtype=torch.bool)
    result = apply_operations(scaled, operations, applied, arguments, centres, options, fixed_shapes=fixed_shapes)
    if dtype != torch.uint8:
        result = result.mul(255).round().to(torch.uint8)
    assert torch.equal(result, _expected(images, magnitude))


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_transform_on_tensors_paints_the_authors_rectangle(magnitude, make_image):
    images = _batch((23, 11), make_image)
    transform = DADA([[("Cutout", 1.0, magnitude)]], cutout_fill=FILL, generator=torch.Generator().manual_seed(4))
    drawn = transform.draw_params(len(images))
    result = transform.apply_batch(images, drawn)
    assert torch.equal(result, _expected(images, magnitude, drawn.cutout_centers[:, 0]))


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_search_augmentation_paints_the_authors_rectangle(magnitude, make_image):
    """The search's exact pass applies a sub-policy's Cutout operation as the transform does."""
    images = _batch((20, 20), make_image)
    count = len(images)
    parameters = AugmentationParameters()
    index = SUB_POLICIES.index(("Sharpness", "Cutout"))
    with torch.no_grad():
        parameters.magnitudes[index, 1] = magnitude
    bits = torch.zeros(count, len(SUB_POLICIES), 2)
    bits[:, index, 1] = 1  # Sharpness off, Cutout on
    uniforms = torch.zeros(count, len(SUB_POLICIES))
    discrete = DiscreteDraw(
        torch.full((count,), index), bits, uniforms, uniforms, torch.zeros_like(bits), torch.zeros_like(bits)
    )
    centres = torch.zeros(count, 2, 2)
    # the search's magnitudes are float32 (0.2 * 0.5 * 20 = 2.00000003): centres off the ties of an exact half
    centres[:, 1] = torch.tensor(_centres()) + torch.tensor([0.013, -0.017])
    draw = AugmentationDraw(discrete, torch.ones(count, 2), centres)
    result = parameters.augment(images, draw, "straight-through").images.detach()
    expected = _expected(images, magnitude, centres[:, 1], fill=(125, 123, 114))  # the published fill
    assert torch.equal(result.mul(255).round().to(torch.uint8), expected)
