"""``DADA(generator=g)`` in DataLoader workers: each worker and each epoch draws its own stream."""

from __future__ import annotations

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
