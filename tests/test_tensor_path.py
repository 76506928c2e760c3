"""The tensor path: agreement with PIL's own operations, batches, dtypes, devices, randomness."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from torchvision import tv_tensors

from dada_transforms import DADA, OPERATION_NAMES, load_policy

NEAREST = Image.Resampling.NEAREST
GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


def _pil_reference(op: str, image: Image.Image, magnitude: float) -> list[Image.Image]:
    """PIL's own result for both signs of the argument (the method's ranges, restated)."""
    def affine(coefficients):
        return image.transform(image.size, Image.Transform.AFFINE, coefficients, NEAREST)

    w, h = image.size
    table = {
        "ShearX": (0.3, lambda a: affine((1, a, 0, 0, 1, 0))),
        "ShearY": (0.3, lambda a: affine((1, 0, 0, a, 1, 0))),
        "TranslateX": (0.45, lambda a: affine((1, 0, a * w, 0, 1, 0))),
        "TranslateY": (0.45, lambda a: affine((1, 0, 0, 0, 1, a * h))),
        "Rotate": (30, lambda a: image.rotate(a)),
    }
    if op in table:
        bound, apply = table[op]
        argument = -bound + magnitude * 2 * bound
        return [apply(argument), apply(-argument)]
    factor = 0.1 + magnitude * 1.8
    return [{
        "AutoContrast": lambda: ImageOps.autocontrast(image),
        "Invert": lambda: ImageOps.invert(image),
        "Equalize": lambda: ImageOps.equalize(image),
        "Solarize": lambda: ImageOps.solarize(image, magnitude * 256),
        "Posterize": lambda: ImageOps.posterize(image, int(4 + magnitude * 4)),
        "Contrast": lambda: ImageEnhance.Contrast(image).enhance(factor),
        "Color": lambda: ImageEnhance.Color(image).enhance(factor),
        "Brightness": lambda: ImageEnhance.Brightness(image).enhance(factor),
        "Sharpness": lambda: ImageEnhance.Sharpness(image).enhance(factor),
    }[op]()]


def _matches_one(result: torch.Tensor, references: list[Image.Image]) -> bool:
    return any(torch.equal(result, TF.pil_to_tensor(reference)) for reference in references)


@pytest.mark.parametrize("op", [name for name in OPERATION_NAMES if name != "Cutout"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("size", [(37, 26), (64, 64), (5, 90)])
def test_uint8_tensors_give_pils_bytes(op, mode, size, make_image):
    image = make_image(*size, mode, seed=3)
    pair = TF.pil_to_tensor(image).expand(2, -1, -1, -1)  # a batch: the tensor kernels (one image would go to PIL)
    for magnitude in (0.0, 0.17, 0.5, 0.74, 0.93, 1.0):
        transform = DADA([[(op, 1.0, magnitude)]])
        for seed in range(3):
            torch.manual_seed(seed)
            for result in transform(pair):
                assert _matches_one(result, _pil_reference(op, image, magnitude)), f"{op} m={magnitude}"


def test_bilinear_geometry_agrees_up_to_resampling(make_image):
    image = make_image(48, 40)
    tensor = TF.pil_to_tensor(image)
    for op in sorted(GEOMETRIC):
        transform = DADA([[(op, 1.0, 0.9)]], interpolation="bilinear")
        torch.manual_seed(0)
        result = transform(tensor).int()
        torch.manual_seed(0)
        expected = TF.pil_to_tensor(transform(image)).int()
        assert (result - expected).abs().float().mean() < 3, op


def test_same_seed_same_result_on_both_paths(make_image):
    image = make_image(36, 28)
    transform = DADA("imagenet")
    for seed in range(40):
        torch.manual_seed(seed)
        from_pil = TF.pil_to_tensor(transform(image))
        torch.manual_seed(seed)
        assert torch.equal(transform(TF.pil_to_tensor(image)), from_pil)


def test_float_input_stays_float_and_close_to_uint8(make_image):
    uint8 = TF.pil_to_tensor(make_image(32, 32)).unsqueeze(0).repeat(16, 1, 1, 1)
    as_float = uint8.float() / 255
    transform = DADA("cifar10")
    torch.manual_seed(0)
    from_uint8 = transform(uint8)
    torch.manual_seed(0)
    from_float = transform(as_float)
    assert from_float.dtype == torch.float32 and 0 <= from_float.min() and from_float.max() <= 1
    difference = (from_float * 255 - from_uint8.float()).abs()
    assert (difference > 2).float().mean() < 0.01


def test_batch_draws_per_sample(make_image):
    image = TF.pil_to_tensor(make_image(32, 32))
    batch = image.unsqueeze(0).repeat(512, 1, 1, 1)
    policy = [[("Invert", 1.0, 0.5)], [("Equalize", 1.0, 0.5)], [("Solarize", 1.0, 0.5)], [("Brightness", 0.5, 0.0)]]
    torch.manual_seed(0)
    result = DADA(policy)(batch)
    expected = {
        "invert": TF.pil_to_tensor(ImageOps.invert(TF.to_pil_image(image))),
        "equalize": TF.pil_to_tensor(ImageOps.equalize(TF.to_pil_image(image))),
        "solarize": TF.pil_to_tensor(ImageOps.solarize(TF.to_pil_image(image), 128)),
        "dark": TF.pil_to_tensor(ImageEnhance.Brightness(TF.to_pil_image(image)).enhance(0.1)),
        "unchanged": image,
    }
    counts = {name: int((result == value).flatten(1).all(1).sum()) for name, value in expected.items()}
    assert sum(counts.values()) == 512
    for name in ("invert", "equalize", "solarize"):  # 128 expected each
        assert 128 - 4 * math.sqrt(96) < counts[name] < 128 + 4 * math.sqrt(96), counts
    assert 64 - 4 * math.sqrt(48) < counts["dark"] < 64 + 4 * math.sqrt(48), counts


def test_shapes_and_tv_tensors(make_image):
    transform = DADA("svhn")
    image = TF.pil_to_tensor(make_image(24, 20))
    assert transform(image).shape == image.shape
    nested = image.expand(2, 3, *image.shape).contiguous()
    assert transform(nested).shape == nested.shape
    grey = image[:1].unsqueeze(0).repeat(4, 1, 1, 1)
    assert transform(grey).shape == grey.shape
    wrapped = transform(tv_tensors.Image(image))
    assert isinstance(wrapped, tv_tensors.Image) and wrapped.shape == image.shape
    tiny = torch.randint(0, 256, (8, 3, 1, 1), dtype=torch.uint8)
    for _ in range(20):
        assert transform(tiny).shape == tiny.shape


def test_input_is_not_modified(make_image):
    batch = TF.pil_to_tensor(make_image(16, 16)).unsqueeze(0).repeat(32, 1, 1, 1)
    before = batch.clone()
    DADA([[("Invert", 1.0, 0.5)]])(batch)
    assert torch.equal(batch, before)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(3, 8), "expected an image tensor"),
        (torch.zeros(2, 4, 8, 8, dtype=torch.uint8), "expected 1 or 3 channels, got 4"),
        (torch.zeros(3, 8, 8, dtype=torch.int32), "uint8 or floating point"),
        (torch.zeros(3, 0, 8, dtype=torch.uint8), "non-empty"),
    ],
)
def test_bad_tensors_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        DADA("cifar10")(bad)


def test_generator_makes_runs_repeatable(make_image):
    batch = TF.pil_to_tensor(make_image(16, 16)).unsqueeze(0).repeat(64, 1, 1, 1)
    first = DADA("cifar100", generator=torch.Generator().manual_seed(7))(batch)
    second = DADA("cifar100", generator=torch.Generator().manual_seed(7))(batch)
    third = DADA("cifar100", generator=torch.Generator().manual_seed(8))(batch)
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_magnitude_noise_changes_arguments(make_image):
    image = TF.pil_to_tensor(make_image(16, 16)).unsqueeze(0).repeat(128, 1, 1, 1)
    plain = DADA([[("Brightness", 1.0, 0.5)]])(image)
    noisy = DADA([[("Brightness", 1.0, 0.5)]], magnitude_std=0.2)(image)
    assert len(torch.unique(plain.float().mean((1, 2, 3)))) == 1
    assert len(torch.unique(noisy.float().mean((1, 2, 3)))) > 50


def test_every_published_policy_runs_on_batches():
    batch = torch.randint(0, 256, (64, 3, 20, 28), dtype=torch.uint8)
    for name in ("cifar10", "cifar100", "svhn", "imagenet"):
        policy = load_policy(name)
        result = DADA(policy)(batch)
        assert result.shape == batch.shape and result.dtype == torch.uint8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_matches_cpu_and_stays_on_device(make_image):
    batch = TF.pil_to_tensor(make_image(32, 32)).unsqueeze(0).repeat(256, 1, 1, 1)
    transform = DADA("imagenet")
    drawn = transform.draw_params(256)
    on_cpu = transform.apply_batch(batch, drawn)
    on_gpu = transform.apply_batch(batch.cuda(), drawn.to(torch.device("cuda")))
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu().int() - on_cpu.int()).abs().gt(2).float().mean() < 0.01
    assert transform(batch.cuda()).device.type == "cuda"


# ---------------------------------------------------------------- mixed batches, every dtype

FILL, CUTOUT = (200, 30, 90), (10, 250, 128)
# every operation in each slot, at varied magnitudes: a batch of 120 draws all 15 kinds in both
EVERY_KIND = [
    [(OPERATION_NAMES[i], 1.0, (0.1 + 0.37 * i) % 1), (OPERATION_NAMES[(i + 7) % 15], 0.8, (0.9 - 0.23 * i) % 1)]
    for i in range(15)
]
FLOATS = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _pil_apply(image: Image.Image, op: str, argument: float, center: tuple[float, float]) -> Image.Image:
    """PIL's own call for one drawn operation (the method's definitions, restated)."""
    w, h = image.size
    def affine(coefficients):
        return image.transform(image.size, Image.Transform.AFFINE, coefficients, NEAREST, fillcolor=FILL)

    if op == "Cutout":  # the authors' CutoutAbs: an inclusive rectangle from the unrounded side
        side = argument * w
        x0, y0 = int(max(0.0, center[0] * w - side / 2)), int(max(0.0, center[1] * h - side / 2))
        image = image.copy()
        ImageDraw.Draw(image).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), fill=CUTOUT)
        return image
    return {
        "ShearX": lambda: affine((1, argument, 0, 0, 1, 0)),
        "ShearY": lambda: affine((1, 0, 0, argument, 1, 0)),
        "TranslateX": lambda: affine((1, 0, argument * w, 0, 1, 0)),
        "TranslateY": lambda: affine((1, 0, 0, 0, 1, argument * h)),
        "Rotate": lambda: image.rotate(argument, fillcolor=FILL),
        "AutoContrast": lambda: ImageOps.autocontrast(image),
        "Invert": lambda: ImageOps.invert(image),
        "Equalize": lambda: ImageOps.equalize(image),
        "Solarize": lambda: ImageOps.solarize(image, argument),
        "Posterize": lambda: ImageOps.posterize(image, max(1, int(argument))),
        "Contrast": lambda: ImageEnhance.Contrast(image).enhance(argument),
        "Color": lambda: ImageEnhance.Color(image).enhance(argument),
        "Brightness": lambda: ImageEnhance.Brightness(image).enhance(argument),
        "Sharpness": lambda: ImageEnhance.Sharpness(image).enhance(argument),
    }[op]()


def _pil_results(images: torch.Tensor, drawn) -> torch.Tensor:
    """Each uint8 image of the batch through PIL with its own drawn operations."""
    results = []
    for row, tensor in enumerate(images):
        image = TF.to_pil_image(tensor)
        for slot in range(drawn.operations.shape[1]):
            if drawn.applied[row, slot]:
                op = OPERATION_NAMES[int(drawn.operations[row, slot])]
                center = tuple(drawn.cutout_centers[row, slot].tolist())
                image = _pil_apply(image, op, float(drawn.arguments[row, slot]), center)
        results.append(TF.pil_to_tensor(image))
    return torch.stack(results)


def _float_fills() -> dict[str, tuple[float, ...]]:
    """FILL and CUTOUT for float images: as torchvision's fill, in the images' range [0, 1]."""
    return {"fill": tuple(v / 255 for v in FILL), "cutout_fill": tuple(v / 255 for v in CUTOUT)}


def _row(drawn, row: int):
    return type(drawn)(**{name: value[row : row + 1] for name, value in vars(drawn).items()})


def _photos(count: int, make_image, size=(23, 19)) -> torch.Tensor:
    return torch.stack([TF.pil_to_tensor(make_image(*size, seed=seed)) for seed in range(count)])


@pytest.mark.parametrize("dtype", [torch.uint8, *FLOATS])
def test_mixed_batch_matches_single_images_and_pil(dtype, make_image):
    fills = {"fill": FILL, "cutout_fill": CUTOUT} if dtype == torch.uint8 else _float_fills()
    transform = DADA(EVERY_KIND, **fills, generator=torch.Generator().manual_seed(5))
    uint8 = _photos(120, make_image)
    drawn = transform.draw_params(len(uint8))
    applied = {(slot, int(op)) for slot in range(2) for op, used in zip(drawn.operations[:, slot], drawn.applied[:, slot]) if used}
    assert applied == {(slot, op) for slot in range(2) for op in range(15)}
    images = uint8 if dtype == torch.uint8 else uint8.to(dtype) / 255
    batched = transform.apply_batch(images, drawn)
    assert batched.dtype == dtype and batched.shape == images.shape
    expected = _pil_results(uint8, drawn)
    for row in range(len(images)):
        single = transform.apply_batch(images[row : row + 1], _row(drawn, row))
        assert torch.equal(batched[row : row + 1], single), f"image {row}: batched != unbatched"
        if dtype == torch.uint8:
            assert torch.equal(batched[row], expected[row]), f"image {row}: not PIL's bytes"
        else:  # float arithmetic differs from PIL's 8-bit truncations by a level here and there (bfloat16: two)
            levels = (batched[row].double() * 255 - expected[row].double()).abs()
            tolerance = 4.5 if dtype == torch.bfloat16 else 2.5
            assert levels.gt(tolerance).double().mean() < 0.03, f"image {row} ({dtype}) differs from PIL"


def test_later_batches_reuse_warps_and_keep_pils_bytes(make_image):
    """Without magnitude noise the warps met in one batch are looked up in the next ones (by operation,
    argument and image size): every batch, of either size and in any order, still gives PIL's bytes."""
    transform = DADA(EVERY_KIND, fill=FILL, cutout_fill=CUTOUT, generator=torch.Generator().manual_seed(9))
    for size in [(23, 19), (16, 16), (23, 19), (16, 16)]:
        uint8 = _photos(40, make_image, size)
        drawn = transform.draw_params(len(uint8))
        batched = transform.apply_batch(uint8, drawn)
        expected = _pil_results(uint8, drawn)
        for row in range(len(uint8)):
            assert torch.equal(batched[row], expected[row]), f"{size}, image {row}: not PIL's bytes"


def test_magnitude_noise_batches_keep_pils_bytes(make_image):
    """With magnitude noise every argument is new: each batch's warps are computed, PIL's bytes as ever."""
    generator = torch.Generator().manual_seed(4)
    transform = DADA(EVERY_KIND, magnitude_std=0.3, fill=FILL, cutout_fill=CUTOUT, generator=generator)
    for _ in range(2):
        uint8 = _photos(48, make_image)
        drawn = transform.draw_params(len(uint8))
        batched = transform.apply_batch(uint8, drawn)
        expected = _pil_results(uint8, drawn)
        for row in range(len(uint8)):
            assert torch.equal(batched[row], expected[row]), f"image {row}: not PIL's bytes"


def test_warp_cache_stays_within_its_budget():
    """Warps that would pass the budget are not kept (the caller computes them); those kept are the computed ones."""
    from dada_transforms.functional_tensor import nearest_sources, rotate_coefficients
    from dada_transforms.warp_cache import WarpCache

    cache = WarpCache(budget_bytes=3 * 12 * 10 * 8)  # three warps of 10x12 pixels
    rotate = OPERATION_NAMES.index("Rotate")
    angles = torch.tensor([5.0, -5.0, 5.0, 12.5], dtype=torch.float64)
    def computed(angles):
        return nearest_sources(rotate_coefficients(angles, 12, 10), 12, 10)

    assert torch.equal(cache.sources([rotate] * 4, angles, 12, 10), computed(angles))
    assert cache.sources([rotate] * 2, torch.tensor([7.0, 9.0], dtype=torch.float64), 12, 10) is None
    assert torch.equal(cache.sources([rotate], angles[1:2], 12, 10), computed(angles[1:2]))


def test_geometry_with_a_one_level_fill_matches_single_images(make_image):
    """A fill of one level is padded as a constant on the tensor path: the bytes of single images (PIL's kernels)."""
    geometric = [[(op, 1.0, 0.8)] for op in sorted(GEOMETRIC)]
    transform = DADA(geometric, fill=(128, 128, 128), generator=torch.Generator().manual_seed(2))
    images = _photos(40, make_image)
    drawn = transform.draw_params(len(images))
    batched = transform.apply_batch(images, drawn)
    for row in range(len(images)):
        single = transform.apply_batch(images[row : row + 1], _row(drawn, row))
        assert torch.equal(batched[row : row + 1], single), f"image {row}"


@pytest.mark.parametrize("strategy_input", ["uint8", "float32", "bfloat16"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
def test_fixed_shapes_and_grouped_strategies_agree(strategy_input, interpolation, make_image):
    from dada_transforms.batch import apply_operations
    from dada_transforms.functional_tensor import TensorOptions

    uint8 = _photos(48, make_image, (21, 17))
    images = uint8 if strategy_input == "uint8" else (uint8 / 255).to(getattr(torch, strategy_input))
    for policy in (EVERY_KIND, "svhn"):
        transform = DADA(policy, interpolation=interpolation, fill=FILL, cutout_fill=CUTOUT)
        drawn = transform.draw_params(len(images))
        options = TensorOptions(FILL, CUTOUT, interpolation, drawn.cutout_centers[:, 0])
        fixed, grouped = (
            apply_operations(images, drawn.operations, drawn.applied, drawn.arguments, drawn.cutout_centers, options,
                             fixed_shapes=fixed_shapes)
            for fixed_shapes in (True, False)
        )
        assert torch.equal(fixed, grouped)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_bilinear_and_bicubic_batches_match_single_images_and_pil(interpolation, make_image):
    transform = DADA(EVERY_KIND, interpolation=interpolation, fill=FILL, cutout_fill=CUTOUT)
    on_floats = DADA(EVERY_KIND, interpolation=interpolation, **_float_fills())
    uint8 = _photos(60, make_image, (40, 32))
    drawn = transform.draw_params(len(uint8))
    for images, transform in ((uint8, transform), (uint8 / 255, on_floats)):
        batched = transform.apply_batch(images, drawn)
        for row in range(0, len(images), 7):
            assert torch.equal(batched[row : row + 1], transform.apply_batch(images[row : row + 1], _row(drawn, row)))
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[interpolation]
    for op in sorted(GEOMETRIC):
        for magnitude in (0.05, 0.8):
            one = DADA([[(op, 1.0, magnitude)]], interpolation=interpolation, fill=FILL)
            drawn = one.draw_params(1)
            argument = float(drawn.arguments[0, 0])
            image = TF.to_pil_image(uint8[0])
            w, h = image.size
            expected = {
                "ShearX": (1, argument, 0, 0, 1, 0), "ShearY": (1, 0, 0, argument, 1, 0),
                "TranslateX": (1, 0, argument * w, 0, 1, 0), "TranslateY": (1, 0, 0, 0, 1, argument * h),
            }
            reference = (
                image.rotate(argument, resample, fillcolor=FILL) if op == "Rotate"
                else image.transform(image.size, Image.Transform.AFFINE, expected[op], resample, fillcolor=FILL)
            )
            result = one.apply_batch(uint8[:1], drawn)[0].int()
            assert (result - TF.pil_to_tensor(reference).int()).abs().float().mean() < 3, (op, magnitude)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16])
def test_cuda_mixed_batch_matches_cpu_image_by_image(dtype, make_image):
    transform = DADA(EVERY_KIND, **({"fill": FILL, "cutout_fill": CUTOUT} if dtype == torch.uint8 else _float_fills()))
    uint8 = _photos(120, make_image)
    images = uint8 if dtype == torch.uint8 else uint8.to(dtype) / 255
    drawn = transform.draw_params(len(images))
    on_cpu = transform.apply_batch(images, drawn)
    on_gpu = transform.apply_batch(images.cuda(), drawn.to(torch.device("cuda")))
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == dtype
    scale = 1 if dtype == torch.uint8 else 255
    for row, (gpu, cpu) in enumerate(zip(on_gpu.cpu(), on_cpu)):
        levels = (gpu.double() - cpu.double()).abs() * scale
        assert levels.gt(1.5).double().mean() <= 0.005, f"image {row} differs between CUDA and CPU"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_generator_makes_runs_repeatable(make_image):
    batch = _photos(64, make_image).cuda()
    runs = [DADA("imagenet", generator=torch.Generator("cuda").manual_seed(seed))(batch) for seed in (3, 3, 4)]
    assert all(run.device.type == "cuda" for run in runs)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
