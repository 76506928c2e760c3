"""The batched path never waits for the device: no data-dependent shape, no value read on the host,
and after the first batch no host-to-device copy.

Two proofs, for every dtype, 3-D/4-D/5-D input and policy: the whole draw and application
runs on the ``meta`` device (tensors without data, where any read of a value fails), and
the aten operations it dispatches, and the tensors it makes from Python numbers, are recorded
(``sync_recorder.SyncRecorder``) and checked against those that synchronise. With a GPU the same
recording runs on CUDA, where copies back to the host are refused too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from dada_transforms import DADA, OPERATION_NAMES
from dada_transforms.batch import apply_operations
from dada_transforms.functional_tensor import TensorOptions
from dada_transforms.search.augmentation import MAGNITUDE_GRADIENTS, AugmentationParameters

# tests/sync_recorder.py, loaded by path: the tests are imported with --import-mode=importlib (not on sys.path)
_spec = importlib.util.spec_from_file_location("sync_recorder", Path(__file__).with_name("sync_recorder.py"))
sync_recorder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_recorder)
Recorder = sync_recorder.SyncRecorder

EVERY_KIND = [[(OPERATION_NAMES[i], 0.7, 0.6), (OPERATION_NAMES[(i + 4) % 15], 0.6, 0.3)] for i in range(15)]
DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


def _images(shape, dtype, device):
    images = torch.zeros(shape, dtype=dtype, device=device)
    return images if device == "meta" else images.random_(0, 256).to(dtype).div(255 if dtype.is_floating_point else 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype, shape",
    [(dtype, shape) for dtype in (torch.uint8, torch.float32) for shape in ((3, 12, 10), (6, 1, 12, 10), (2, 3, 3, 12, 10))]
    + [(dtype, (6, 3, 12, 10)) for dtype in (torch.float16, torch.bfloat16, torch.float64)],
)
def test_draw_and_apply_never_synchronise(device, dtype, shape):
    images = _images(shape, dtype, device)
    for policy, interpolation in ((EVERY_KIND, "nearest"), ("imagenet", "bilinear"), ("cifar10", "bicubic")):
        fill = (1, 2, 3) if dtype == torch.uint8 else (0.1, 0.2, 0.3)  # in the images' range, as torchvision's
        transform = DADA(policy, interpolation=interpolation, fill=fill, magnitude_std=0.1)
        batch = images.reshape(-1, *shape[-3:])
        with Recorder() as recorder:
            drawn = transform.draw_params(len(batch), device)
            result = transform.apply_batch(batch, drawn)
        assert recorder.synchronising == [], (policy, recorder.synchronising)
        assert {"gather", "where"} <= set(recorder.names)  # the recording saw the application
        assert result.shape == batch.shape and result.dtype == dtype and result.device == batch.device


@pytest.mark.parametrize("device", DEVICES)
def test_whole_uint8_tensors_never_synchronise(device):
    transform = DADA(EVERY_KIND)
    for shape in ((3, 12, 10), (6, 3, 12, 10), (2, 3, 1, 12, 10)):
        images = _images(shape, torch.uint8, device)
        with Recorder() as recorder:
            result = transform(images)
        assert recorder.synchronising == [] and result.shape == images.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("magnitude_grad", MAGNITUDE_GRADIENTS)
def test_search_augmentation_step_never_synchronises(device, magnitude_grad):
    parameters = AugmentationParameters().to(device)
    images = _images((8, 3, 12, 10), torch.uint8, device)
    with Recorder() as recorder:
        for per_sample in (True, False):
            sample = parameters.sample(len(images), per_sample)
            augmented = parameters.augment(images, sample, magnitude_grad)
            (augmented.images.sum() + augmented.straight_through.sum()).backward()
    assert recorder.synchronising == [], recorder.synchronising
    assert augmented.images.shape == images.shape


def test_the_recorder_catches_the_grouped_strategy():
    """The CPU's eager strategy counts each kind's images on the host: the checks above would see it."""
    transform = DADA(EVERY_KIND)
    images = torch.randint(0, 256, (16, 3, 12, 10), dtype=torch.uint8)
    drawn = transform.draw_params(len(images))
    tensors = (images, drawn.operations, drawn.applied, drawn.arguments, drawn.cutout_centers)
    options = TensorOptions(None, (0, 0, 0), "nearest", drawn.cutout_centers[:, 0])
    with Recorder() as recorder:
        apply_operations(*tensors, options, fixed_shapes=False)
    assert "bincount" in recorder.synchronising
    on_meta = [tensor.to("meta") for tensor in tensors]
    options = options._replace(cutout_centers=on_meta[-1][:, 0])
    with pytest.raises((NotImplementedError, RuntimeError), match="bincount|meta"):
        apply_operations(*on_meta, options, fixed_shapes=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_later_batches_copy_nothing_to_the_device(device, dtype, interpolation):
    """``torch.tensor(python_list, device=accelerator)`` is a pageable host-to-device copy that the host
    waits for: the first batch on a device may make the constants it needs, later batches none (the
    published policies, an RGB fill, the Cutout fill, every path of the fixed-shape strategy)."""
    fill = (10, 20, 30) if dtype == torch.uint8 else (0.1, 0.2, 0.3)
    for policy in ("cifar10", "imagenet", EVERY_KIND):
        transform = DADA(policy, interpolation=interpolation, fill=fill, cutout_fill=fill)
        images = _images((8, 3, 12, 10), dtype, device)
        transform.apply_batch(images, transform.draw_params(len(images), device))  # warm-up
        with Recorder() as recorder:
            for _ in range(2):
                transform.apply_batch(images, transform.draw_params(len(images), device))
                if dtype == torch.uint8:
                    transform(images)
        assert recorder.host_to_device == [], (policy, recorder.host_to_device)
        assert recorder.synchronising == [], (policy, recorder.synchronising)


def test_the_recorder_sees_host_to_device_copies():
    with Recorder() as recorder:
        torch.tensor([1.0, 2.0], device="meta")
        torch.ones(2).to("meta")
        torch.tensor([1.0])  # on the host: not a copy
    assert len(recorder.host_to_device) == 2, recorder.host_to_device
