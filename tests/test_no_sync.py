"""The batched path never waits for the device: no data-dependent shape, no value read on the host.

Two proofs, for every dtype, 3-D/4-D/5-D input and policy: the whole draw and application
runs on the ``meta`` device (tensors without data, where any read of a value fails), and
the aten operations it dispatches are recorded and checked against those that synchronise.
With a GPU the same recording runs on CUDA, where copies back to the host are refused too.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dada_transforms import DADA, OPERATION_NAMES
from dada_transforms.batch import apply_operations
from dada_transforms.functional_tensor import TensorOptions
from dada_transforms.search.augmentation import MAGNITUDE_GRADIENTS, AugmentationParameters

SYNCHRONISING = frozenset(
    {"nonzero", "nonzero_static", "_local_scalar_dense", "item", "unique", "_unique", "_unique2", "unique_dim",
     "unique_consecutive", "masked_select", "bincount", "histc", "repeat_interleave", "equal", "is_nonzero",
     "allclose", "_assert_async"}
)
EVERY_KIND = [[(OPERATION_NAMES[i], 0.7, 0.6), (OPERATION_NAMES[(i + 4) % 15], 0.6, 0.3)] for i in range(15)]
DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


class Recorder(TorchDispatchMode):
    """Records the aten operations dispatched, and those that would make the host wait."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.synchronising: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._overloadpacket.__name__
        self.names.append(name)
        tensors = [value for value in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(value, torch.Tensor)]
        if name in SYNCHRONISING:
            self.synchronising.append(name)
        elif name.startswith("index") and any(t.dtype == torch.bool for t in tensors[1:]):
            self.synchronising.append(f"{name} with a boolean mask")
        result = func(*args, **kwargs)
        outputs = [value for value in torch.utils._pytree.tree_leaves(result) if isinstance(value, torch.Tensor)]
        if any(t.device.type not in ("cpu", "meta") for t in tensors) and any(t.device.type == "cpu" for t in outputs):
            self.synchronising.append(f"{name} copying to the host")
        return result


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
        transform = DADA(policy, interpolation=interpolation, fill=(1, 2, 3), magnitude_std=0.1)
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
