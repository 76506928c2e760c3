"""The batched application compiles whole (``fullgraph=True``) and gives the same bytes as eager."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dada_transforms import DADA, OPERATION_NAMES
from dada_transforms.batch import apply_operations, compiled_apply_operations
from dada_transforms.functional_tensor import TensorOptions
from dada_transforms.search.augmentation import AugmentationDraw, AugmentationParameters

EVERY_KIND = [[(OPERATION_NAMES[i], 0.8, (0.2 + 0.31 * i) % 1), (OPERATION_NAMES[(i + 6) % 15], 0.7, 0.75)] for i in range(15)]
ONE_SLOT = [[(name, 0.9, (0.2 + 0.31 * i) % 1)] for i, name in enumerate(OPERATION_NAMES)]


def test_compiled_transform_gives_eager_bytes(make_image):
    """``DADA(..., compile=True)`` with inductor, the default backend, on every kind (one slot: compiling is slow)."""
    images = torch.stack([TF.pil_to_tensor(make_image(20, 16, seed=seed)) for seed in range(48)]).view(4, 12, 3, 16, 20)
    compiled = DADA(ONE_SLOT, fill=(9, 99, 199), compile=True, generator=torch.Generator().manual_seed(1))
    eager = DADA(ONE_SLOT, fill=(9, 99, 199), generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        assert torch.equal(compiled(images), eager(images))


@pytest.mark.parametrize("dtype, interpolation", [(torch.float32, "bilinear")])  # tracing takes seconds a case
def test_float_application_has_no_graph_break(dtype, interpolation, make_image):
    images = torch.stack([TF.pil_to_tensor(make_image(20, 16, seed=seed)) for seed in range(24)]).to(dtype) / 255
    transform = DADA(EVERY_KIND, interpolation=interpolation)
    drawn = transform.draw_params(len(images))
    options = TensorOptions(None, (1, 2, 3), interpolation, drawn.cutout_centers[:, 0])
    arguments = (images, drawn.operations, drawn.applied, drawn.arguments, drawn.cutout_centers, options)
    compiled = torch.compile(apply_operations, fullgraph=True, backend="eager")  # the graph, without code generation
    assert torch.equal(compiled(*arguments), apply_operations(*arguments, fixed_shapes=True))


@pytest.mark.parametrize("magnitude_grad", ["autodiff"])  # the exact pass of "straight-through" and a surrogate
def test_search_augmentation_step_has_no_graph_break(magnitude_grad):
    parameters = AugmentationParameters()
    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)

    def step(images: torch.Tensor, sample: AugmentationDraw) -> torch.Tensor:
        augmented = parameters.augment(images, sample, magnitude_grad)
        return augmented.images + augmented.straight_through.view(-1, 1, 1, 1)

    compiled = torch.compile(step, fullgraph=True, backend="eager")
    for per_sample in (True, False):
        sample = parameters.sample(len(images), per_sample, torch.Generator().manual_seed(0))
        result = compiled(images, sample)
        assert torch.equal(result, step(images, sample))
    result.sum().backward()
    assert parameters.magnitudes.grad is not None and parameters.magnitudes.grad.abs().sum() > 0


def test_compile_must_be_a_bool():
    with pytest.raises(ValueError, match="compile must be True or False, got 'yes'"):
        DADA("cifar10", compile="yes")


def test_nine_configurations_in_one_process_compile(monkeypatch):
    """Dynamo allows 8 recompilations per compiled code object, and ``fullgraph=True`` fails beyond
    them: nine policies in one process raised ``FailOnRecompileLimitHit``. (Tracing only: the eager
    backend, one small image per policy.)"""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    images = torch.randint(0, 256, (2, 3, 6, 5), dtype=torch.uint8)
    for name in OPERATION_NAMES[5:15]:  # ten one-operation policies: ten graphs
        compiled = DADA([[(name, 1.0, 0.7)]], compile=True, generator=torch.Generator().manual_seed(0))
        eager = DADA([[(name, 1.0, 0.7)]], generator=torch.Generator().manual_seed(0))
        assert torch.equal(compiled(images), eager(images)), name


def test_compiled_functions_are_kept_per_configuration(monkeypatch):
    """One compiled function per configuration the graph is specialised on, reused for the same one."""
    compiled_for = []
    monkeypatch.setattr(torch, "compile", lambda function, **options: compiled_for.append(function) or function)
    compiled_apply_operations.cache_clear()
    images = torch.randint(0, 256, (4, 3, 6, 5), dtype=torch.uint8)
    variants = [
        ("cifar10", {}, images), ("cifar10", {}, images.clone()),  # the same configuration twice
        ("svhn", {}, images), ("cifar10", {"fill": 7}, images), ("cifar10", {"cutout_fill": 7}, images),
        ("cifar10", {"interpolation": "bilinear"}, images), ("cifar10", {}, images.float() / 255),
        ("cifar10", {}, images[:3]), ("cifar10", {}, images[:, :1]),
    ]
    for policy, options, batch in variants:
        DADA(policy, compile=True, **options)(batch)
    assert len(compiled_for) == len(variants) - 1
    assert len({id(function.__code__) for function in compiled_for}) == len(compiled_for)  # each its own code object
    compiled_apply_operations.cache_clear()
