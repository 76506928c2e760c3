"""``DADA(generator=g)`` in DataLoader workers: each worker and each epoch draws its own stream."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import FakeData

from dada_transforms import DADA


def _images(transform: DADA | None = None) -> FakeData:
    """32 small fixed images (FakeData draws each from its index), augmented by ``transform``.

    A dataset of the library's own (not one defined here): spawned workers import it by name."""
    tail = [transforms.PILToTensor()]
    return FakeData(size=32, image_size=(3, 4, 4), transform=transforms.Compose([*tail, *([transform] if transform else [])]))


_ORIGINALS = torch.stack([image for image, _ in _images()])


def _inverted(loader: DataLoader) -> torch.Tensor:
    """Which items came out inverted, in the order [batch, item]."""
    batches = [images for images, _ in loader]
    originals = _ORIGINALS.split(len(batches[0]))
    return torch.stack([(batch == 255 - original).flatten(1).all(1) for batch, original in zip(batches, originals)])


def _epochs(context: str, count: int, seed: int = 7) -> list[torch.Tensor]:
    transform = DADA([[("Invert", 0.5, 0.0)]], generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(_images(transform), batch_size=4, num_workers=2, multiprocessing_context=context)
    torch.manual_seed(0)  # the DataLoader's per-epoch base seed comes from torch's RNG
    return [_inverted(loader) for _ in range(count)]


def test_each_worker_and_epoch_draws_its_own_stream():
    first, second = _epochs("fork", 2)
    assert 4 <= int(first.sum()) <= 28
    assert not torch.equal(first[0::2], first[1::2])  # batches alternate between workers: they differ
    assert not torch.equal(first, second)  # the second epoch is not a replay of the first
    assert torch.equal(_epochs("fork", 1)[0], first)  # deterministic: the same seeds give the same epochs
    assert not torch.equal(_epochs("fork", 1, seed=8)[0], first)  # and the generator's own seed matters


def test_spawned_workers_draw_as_forked_ones():
    assert all(map(torch.equal, _epochs("spawn", 2), _epochs("fork", 2)))


def test_without_workers_the_generator_is_used_as_given():
    transform = DADA([[("Invert", 0.5, 0.0)]], generator=torch.Generator().manual_seed(7))
    loader = DataLoader(_images(transform), batch_size=4)
    first = _inverted(loader)
    transform.generator.manual_seed(7)
    assert torch.equal(_inverted(loader), first)


class _FakeWorker:
    """What ``torch.utils.data.get_worker_info`` returns inside a worker (only its seed is read)."""

    seed = 1234


def _record_generators(monkeypatch) -> list[str]:
    """Record the device of every ``torch.Generator`` created (each made on the CPU: no accelerator here)."""
    created, real = [], torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device="cpu": created.append(str(device)) or real())
    return created


def test_an_accelerator_generator_is_not_created_in_workers(monkeypatch):
    """Unpickled in a (spawned) worker, or reseeded in a (forked) one, a CUDA generator must not be
    created there: that initialises CUDA in every worker (under fork it fails). Drawing for CPU images
    with it in a worker is refused with a clear message."""
    transform = DADA([[("Invert", 0.5, 0.0)]], generator=torch.Generator().manual_seed(7))
    state = transform.__getstate__()
    device, seed, generator_state = state["_generator"]
    state["_generator"] = ("cuda", seed, generator_state)  # as pickled from a CUDA generator
    created = _record_generators(monkeypatch)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: _FakeWorker)
    in_worker = DADA.__new__(DADA)
    in_worker.__setstate__(state)
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="generator is on cuda, but this DataLoader worker augments CPU images"):
        in_worker(image)
    assert created == []


def test_a_forked_worker_does_not_recreate_a_cuda_generator(monkeypatch):
    class CudaGenerator:  # a CUDA generator as the parent process holds it (no CUDA here)
        device = torch.device("cuda")

        def initial_seed(self) -> int:
            return 7

    transform = DADA([[("Invert", 0.5, 0.0)]])
    transform.generator = CudaGenerator()
    created = _record_generators(monkeypatch)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: _FakeWorker)
    with pytest.raises(ValueError, match="give DADA a CPU generator"):
        transform(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    assert created == []
