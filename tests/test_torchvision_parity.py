"""DADA as a drop-in for torchvision's v2 AutoAugment: ``fill`` and ``interpolation`` read as torchvision's.

References are torchvision's own kernels and argument handling (``v2.functional.rotate``,
``torchvision.transforms.v2._utils._setup_fill_arg``), not our code.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2._utils import _get_fill, _setup_fill_arg

from dada_transforms import DADA

ROTATE = [[("Rotate", 1.0, 1.0)]]  # always 30 degrees, either way: the corners are uncovered


def _rotated_like_torchvision(transform: DADA, image, fill):
    """DADA's result and torchvision's ``rotate`` of the same image by the same drawn angle and fill."""
    transform.generator.manual_seed(0)
    angle = float(transform.draw_params(1).arguments[0, 0])
    transform.generator.manual_seed(0)
    return transform(image), TF.rotate(image, angle, interpolation=InterpolationMode.NEAREST, fill=fill)


@pytest.mark.parametrize(
    "dtype, fill",
    [(torch.float32, 1.0), (torch.float64, [0.25, 0.5, 1.0]), (torch.uint8, 255), (torch.uint8, (9, 99, 199))],
)
def test_fill_is_in_the_images_range_as_torchvisions(dtype, fill):
    """``DADA(fill=1.0)`` paints white on float images, as ``AutoAugment(fill=1.0)``; 255 on uint8."""
    image = torch.zeros(3, 24, 20, dtype=dtype)
    ours, reference = _rotated_like_torchvision(DADA(ROTATE, fill=fill, generator=torch.Generator()), image, fill)
    expected = torch.tensor(fill if isinstance(fill, (list, tuple)) else [fill] * 3, dtype=dtype)
    assert torch.equal(ours[:, 0, 0], expected) and torch.equal(reference[:, 0, 0], expected)
    uncovered, reference_uncovered = (result.ne(0).any(0) for result in (ours, reference))
    assert (uncovered ^ reference_uncovered).float().mean() < 0.05  # the same corners (up to resampling's edges)


def test_fill_on_pil_images_is_in_levels(make_image):
    image = make_image(20, 24)
    transform = DADA(ROTATE, fill=(9, 99, 199), generator=torch.Generator())
    ours, reference = _rotated_like_torchvision(transform, image, [9, 99, 199])
    assert ours.tobytes() == reference.tobytes()  # torchvision's PIL rotate is PIL's: byte for byte


def test_a_fill_beyond_float_images_range_is_a_clear_error():
    with pytest.raises(ValueError, match=r"fill \(128.0, 128.0, 128.0\) is outside float images' range \[0, 1\]"):
        DADA(ROTATE, fill=128)(torch.rand(3, 8, 8))


def test_cutout_fill_is_in_the_images_range_too():
    image = torch.zeros(1, 3, 16, 16)
    painted = DADA([[("Cutout", 1.0, 1.0)]], cutout_fill=(1.0, 0.5, 0.25))(image)
    assert {tuple(pixel) for pixel in painted[0].flatten(1).T.tolist()} == {(0.0, 0.0, 0.0), (1.0, 0.5, 0.25)}
    default = DADA([[("Cutout", 1.0, 1.0)]])(image)  # the authors' (125, 123, 114) levels on every type
    assert torch.allclose(default.amax((0, 2, 3)), torch.tensor([125, 123, 114]) / 255)


def test_fill_dicts_take_torchvisions_keys(make_image):
    """Keyed by input type as torchvision's ``_get_fill`` reads them: PIL images, plain tensors,
    tv_tensors.Image, and ``"others"`` for the rest."""
    fill = {Image.Image: (255, 0, 0), torch.Tensor: 1.0, tv_tensors.Image: 0.5, "others": 0.25}
    setup = _setup_fill_arg(dict(fill))  # torchvision accepts the same dict
    transform = DADA(ROTATE, fill=fill)
    assert transform(make_image(20, 24)).getpixel((0, 0)) == tuple(int(v) for v in _get_fill(setup, Image.Image))
    for kind, expected in ((torch.Tensor, 1.0), (tv_tensors.Image, 0.5), (tv_tensors.Video, 0.25)):
        image = torch.zeros(3, 24, 20) if kind is torch.Tensor else kind(torch.zeros(1, 3, 24, 20))
        result = transform(image)
        assert type(result) is type(image) and result.flatten()[0].item() == expected == _get_fill(setup, kind)


def test_fill_dict_keys_must_be_types_or_others():
    with pytest.raises(ValueError, match="fill keys must be input types .* or 'others', got 'other'"):
        DADA(ROTATE, fill={"other": 1})


@pytest.mark.parametrize("interpolation", [InterpolationMode.NEAREST_EXACT, "nearest-exact"])
def test_nearest_exact_is_accepted_as_torchvision_maps_it(interpolation, make_image):
    """torchvision applies NEAREST_EXACT to PIL images as PIL's NEAREST (which samples pixel centres);
    DADA does on both paths, whose nearest bytes are PIL's."""
    transform = DADA(ROTATE, interpolation=interpolation, fill=(9, 99, 199), generator=torch.Generator())
    assert transform.interpolation == "nearest"
    image = make_image(20, 24)
    transform.generator.manual_seed(0)
    angle = float(transform.draw_params(1).arguments[0, 0])
    reference = TF.rotate(image, angle, interpolation=InterpolationMode.NEAREST_EXACT, fill=[9, 99, 199])
    for source in (image, TF.pil_to_tensor(image)):
        transform.generator.manual_seed(0)
        result = transform(source)
        result = result if isinstance(result, Image.Image) else TF.to_pil_image(result)
        assert result.tobytes() == reference.tobytes()


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
def test_pil_and_tensor_paths_agree_as_documented(interpolation, make_image):
    """The same seed gives the same image on both paths: byte for byte with nearest resampling; with
    bilinear or bicubic, the geometric operations differ along the edges of the uncovered area (PIL
    either takes a pixel or fills it, ``grid_sample`` blends the two), by up to about 160 levels there:
    measured on 32 px images, under 1 level a pixel on average, under 5 on the worst image."""
    transform = DADA("imagenet", interpolation=interpolation, fill=(9, 99, 199), generator=torch.Generator())
    means = []
    for seed in range(30):
        image = make_image(32, 32, seed=seed)
        transform.generator.manual_seed(seed)
        from_pil = TF.pil_to_tensor(transform(image)).int()
        transform.generator.manual_seed(seed)
        from_tensor = transform(TF.pil_to_tensor(image)).int()
        if interpolation == "nearest":
            assert torch.equal(from_pil, from_tensor), seed
        means.append((from_pil - from_tensor).abs().float().mean().item())
    assert sum(means) / len(means) < 1 and max(means) < 5, means
