"""Each operation on PIL images equals PIL's own operation with the method's arguments.

The ranges below are restated from the design notes (section 2), independently of
the library's table, and the expected images come from PIL itself.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from dada_transforms import DADA

NEAREST = Image.Resampling.NEAREST


def _affine(coefficients):
    return lambda image: image.transform(image.size, Image.Transform.AFFINE, coefficients, NEAREST)


# name -> (low, high, mirrored, reference(image, argument))
REFERENCE = {
    "ShearX": (-0.3, 0.3, True, lambda im, a: _affine((1, a, 0, 0, 1, 0))(im)),
    "ShearY": (-0.3, 0.3, True, lambda im, a: _affine((1, 0, 0, a, 1, 0))(im)),
    "TranslateX": (-0.45, 0.45, True, lambda im, a: _affine((1, 0, a * im.width, 0, 1, 0))(im)),
    "TranslateY": (-0.45, 0.45, True, lambda im, a: _affine((1, 0, 0, 0, 1, a * im.height))(im)),
    "Rotate": (-30, 30, True, lambda im, a: im.rotate(a)),
    "AutoContrast": (0, 0, False, lambda im, a: ImageOps.autocontrast(im)),
    "Invert": (0, 0, False, lambda im, a: ImageOps.invert(im)),
    "Equalize": (0, 0, False, lambda im, a: ImageOps.equalize(im)),
    "Solarize": (0, 256, False, lambda im, a: ImageOps.solarize(im, a)),
    "Posterize": (4, 8, False, lambda im, a: ImageOps.posterize(im, int(a))),
    "Contrast": (0.1, 1.9, False, lambda im, a: ImageEnhance.Contrast(im).enhance(a)),
    "Color": (0.1, 1.9, False, lambda im, a: ImageEnhance.Color(im).enhance(a)),
    "Brightness": (0.1, 1.9, False, lambda im, a: ImageEnhance.Brightness(im).enhance(a)),
    "Sharpness": (0.1, 1.9, False, lambda im, a: ImageEnhance.Sharpness(im).enhance(a)),
}
MAGNITUDES = (0.0, 0.23, 0.5, 0.81, 1.0)


def _outputs(op: str, magnitude: float, image: Image.Image, seeds=range(12)) -> list[bytes]:
    transform = DADA([[(op, 1.0, magnitude)]])
    results = []
    for seed in seeds:
        torch.manual_seed(seed)
        results.append(transform(image).tobytes())
    return results


@pytest.mark.parametrize("op", sorted(REFERENCE))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_operation_equals_pil(op, mode, make_image):
    low, high, mirrored, reference = REFERENCE[op]
    image = make_image(41, 29, mode)
    for magnitude in MAGNITUDES:
        argument = low + magnitude * (high - low)
        expected = {reference(image, argument).tobytes()}
        if mirrored:
            expected.add(reference(image, -argument).tobytes())
        outputs = _outputs(op, magnitude, image)
        assert set(outputs) <= expected, f"{op} m={magnitude} differs from PIL"
        if mirrored and argument != 0:
            assert set(outputs) == expected, f"{op} m={magnitude}: both signs should occur"


def test_mirrored_ops_are_symmetric_around_half(photo):
    for op in ("ShearX", "Rotate", "TranslateY"):
        assert set(_outputs(op, 0.5, photo)) == {photo.tobytes()}
        assert set(_outputs(op, 0.0, photo)) == set(_outputs(op, 1.0, photo))


def test_probability_zero_and_one(photo):
    never = DADA([[("Invert", 0.0, 0.5)]])
    always = DADA([[("Invert", 1.0, 0.5)]])
    for seed in range(10):
        torch.manual_seed(seed)
        assert never(photo).tobytes() == photo.tobytes()
        assert always(photo).tobytes() == ImageOps.invert(photo).tobytes()


def test_operations_apply_in_order(photo):
    transform = DADA([[("Posterize", 1.0, 0.0), ("Brightness", 1.0, 0.9)]])
    expected = ImageEnhance.Brightness(ImageOps.posterize(photo, 4)).enhance(0.1 + 0.9 * 1.8)
    assert transform(photo).tobytes() == expected.tobytes()


def test_fill_and_interpolation_are_configurable(photo):
    transform = DADA([[("TranslateX", 1.0, 1.0)]], fill=(10, 20, 30), interpolation="bilinear")
    torch.manual_seed(0)
    result = transform(photo)
    candidates = {
        photo.transform(photo.size, Image.Transform.AFFINE, (1, 0, s * 0.45 * photo.width, 0, 1, 0),
                        Image.Resampling.BILINEAR, fillcolor=(10, 20, 30)).tobytes()
        for s in (1, -1)
    }
    assert result.tobytes() in candidates


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P"])
@pytest.mark.parametrize("size", [(1, 1), (1, 7), (33, 20)])
def test_modes_and_sizes_round_trip(mode, size, make_image):
    image = make_image(*size).convert(mode) if mode != "P" else make_image(*size).quantize(16)
    for preset in ("cifar10", "svhn", "imagenet"):
        transform = DADA(preset)
        for seed in range(15):
            torch.manual_seed(seed)
            result = transform(image)
            assert result.mode == mode and result.size == image.size


def test_alpha_is_kept_by_colour_operations(make_image):
    image = make_image(20, 16, "RGBA")
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    result = DADA([[("Invert", 1.0, 0.5)]])(image)
    assert result.getchannel("A").tobytes() == image.getchannel("A").tobytes()
    assert result.convert("RGB").tobytes() == ImageOps.invert(image.convert("RGB")).tobytes()


def test_unsupported_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unsupported PIL image mode 'CMYK'"):
        DADA("cifar10")(Image.new("CMYK", (4, 4)))
