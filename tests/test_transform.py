"""The transform inside real pipelines: Compose, DataLoader workers, seeding, pickling, repr."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import FakeData
from torchvision.transforms import InterpolationMode

from dada_transforms import DADA


def test_in_a_torchvision_compose(photo):
    pipeline = transforms.Compose(
        [transforms.RandomResizedCrop(24), transforms.RandomHorizontalFlip(), DADA("imagenet"), transforms.ToTensor()]
    )
    assert pipeline(photo).shape == (3, 24, 24)


def _fake_images(transform=None):
    tail = [transforms.PILToTensor()]
    return FakeData(size=32, image_size=(3, 16, 16), transform=transforms.Compose([*([transform] if transform else []), *tail]))


def _images_of(loader):
    return torch.cat([images for images, _ in loader])


@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_dataloader_workers_draw_independently(context):
    originals = _images_of(DataLoader(_fake_images(), batch_size=4))
    loader = DataLoader(
        _fake_images(DADA([[("Invert", 0.5, 0.0)]])), batch_size=4, num_workers=2, multiprocessing_context=context
    )
    torch.manual_seed(0)
    first = _images_of(loader)
    torch.manual_seed(0)
    assert torch.equal(_images_of(loader), first)  # repeatable with the same seed
    inverted = (first == 255 - originals).flatten(1).all(1)
    assert torch.equal(inverted | (first == originals).flatten(1).all(1), torch.ones(32, dtype=torch.bool))
    assert 4 <= int(inverted.sum()) <= 28  # each item draws for itself
    per_worker = inverted.view(8, 4)  # batches alternate between the two workers
    assert not torch.equal(per_worker[0::2], per_worker[1::2])  # workers do not repeat each other's draws


def test_manual_seed_makes_pil_runs_repeatable(photo):
    transform = DADA("svhn")
    torch.manual_seed(3)
    first = [transform(photo).tobytes() for _ in range(10)]
    torch.manual_seed(3)
    assert [transform(photo).tobytes() for _ in range(10)] == first


def test_pickles_with_its_generator(photo):
    transform = DADA("cifar100", fill=(1, 2, 3), generator=torch.Generator().manual_seed(5))
    clone = pickle.loads(pickle.dumps(transform))
    assert clone.policy == transform.policy and clone.fill == (1, 2, 3)
    assert [clone(photo).tobytes() for _ in range(5)] == [transform(photo).tobytes() for _ in range(5)]


def test_repr_names_the_policy_and_settings():
    text = repr(DADA("imagenet", interpolation=InterpolationMode.BILINEAR, magnitude_std=0.05))
    assert text.startswith("DADA(") and "'imagenet'" in text and "25 sub-policies" in text
    assert "interpolation=bilinear" in text and "magnitude_std=0.05" in text
    assert "cutout_fill=(125, 123, 114)" in text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"interpolation": "lanczos"}, "interpolation must be one of nearest, bilinear, bicubic, got 'lanczos'"),
        ({"fill": (1, 2)}, r"fill must be None, one value or three values in the images' range .*, got \(1, 2\)"),
        ({"fill": 300}, "got 300"),
        ({"cutout_fill": "grey"}, "cutout_fill must be"),
        ({"magnitude_std": -1}, "magnitude_std must be a number >= 0, got -1"),
        ({"generator": 5}, "generator must be a torch.Generator"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DADA("cifar10", **kwargs)


def test_wrong_input_type():
    with pytest.raises(TypeError, match="expects a PIL image or a torch.Tensor, alone or in a sample .*; got int"):
        DADA("cifar10")([1, 2, 3])
    with pytest.raises(TypeError, match="got str"):
        DADA("cifar10")("photo.jpg")


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda: torch.zeros(2, 3, 8, 8, device="meta"), "float images on the meta device cannot be checked"),
        (lambda: torch.zeros(2, 3, 8, 8).to_sparse(), "expected a dense image tensor, got layout torch.sparse_coo"),
        (lambda: torch.zeros(3, 8, 8, dtype=torch.uint8).to_sparse(), "got layout torch.sparse_coo"),
    ],
)
def test_inputs_without_values_are_clear_errors(make_input, message):
    with pytest.raises(ValueError, match=message):
        DADA("cifar10")(make_input())


def test_parameters_come_back_to_the_cpu_with_a_blocking_copy(monkeypatch):
    """A device-to-host copy with ``non_blocking=True`` may be read before it completes (stale
    parameters): only copies onto an accelerator are asynchronous."""
    drawn = DADA("cifar10").draw_params(4)
    copies = []
    monkeypatch.setattr(torch.Tensor, "to", lambda tensor, device, non_blocking=False: copies.append(
        (torch.device(device).type, non_blocking)) or tensor)
    drawn.to(torch.device("cpu"))
    assert copies and all(copy == ("cpu", False) for copy in copies)
    copies.clear()
    drawn.to(torch.device("cuda", 0))
    assert copies and all(copy == ("cuda", True) for copy in copies)
