"""The searched images: a dataset loaded once into a uint8 tensor, its reduced subset, its two halves.

Datasets (``--dataset``):

- ``cifar10``, ``cifar100``, ``svhn`` (the core ``train`` split), ``imagenet``:
  the whole torchvision training set;
- ``reduced-cifar10``/``reduced-cifar100`` (4,000 images), ``reduced-svhn``
  (1,000): the published subsets, drawn stratified by class with scikit-learn's
  ``StratifiedShuffleSplit(random_state=0)`` algorithm (see :mod:`.splits`);
- ``reduced-imagenet``: the 120 classes of ``reduced_imagenet_classes.json``,
  relabelled 0..119 in that order, then 50,000 images drawn the same way;
- ``imagefolder``: every image of a ``DIR/CLASS/IMAGE`` tree.

Images that are not already ``image_size`` square (ImageNet, image folders)
are resized (shorter side) and centre-cropped to it when loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.transforms import v2

from .settings import SearchInputError
from .splits import stratified_split

REDUCED_SIZES = {"reduced-cifar10": 4000, "reduced-cifar100": 4000, "reduced-svhn": 1000, "reduced-imagenet": 50000}
"""Images in each published reduced dataset."""

_STATISTICS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_DECODE_BATCH = 256


@dataclass(frozen=True)
class LabelledImages:
    """Images and their labels, with the normalisation statistics of their dataset."""

    images: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, indices: np.ndarray | torch.Tensor) -> LabelledImages:
        """The images at ``indices``, in that order."""
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return LabelledImages(self.images[indices], self.labels[indices], self.num_classes, self.mean, self.std)

    def to(self, device: torch.device) -> LabelledImages:
        """The same images and labels on ``device``."""
        return LabelledImages(self.images.to(device), self.labels.to(device), self.num_classes, self.mean, self.std)


def reduced_imagenet_classes() -> list[int]:
    """The 120 ImageNet class indices of the published reduced ImageNet."""
    text = resources.files("dada_transforms.search").joinpath("reduced_imagenet_classes.json").read_text("utf-8")
    return json.loads(text)["classes"]


def split_halves(labels: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Search-train and search-val indices: a stratified 50/50 split (``train_size = n // 2``, seed 0)."""
    labels = np.asarray(torch.as_tensor(labels).cpu())
    return stratified_split(labels, len(labels) // 2, seed=0)


def load_search_images(
    dataset: str, data_dir: str | os.PathLike[str] | None, *, download: bool = False, image_size: int = 32
) -> LabelledImages:
    """The images searched on for ``dataset``, as a CPU uint8 tensor (the reduced subset where named so).

    Raises:
        SearchInputError: when the data is missing (naming the folder to fill),
            cannot be downloaded, or is too small to split.
    """
    if dataset == "imagefolder":
        if data_dir is None:
            raise SearchInputError("--dataset imagefolder needs --data-dir DIR, a folder of DIR/CLASS/IMAGE files")
        return _image_folder(Path(data_dir).expanduser(), image_size)
    root = Path("data" if data_dir is None else data_dir).expanduser()
    base = dataset.removeprefix("reduced-")
    if base == "imagenet":
        return _imagenet(root, image_size, reduced=dataset == "reduced-imagenet")
    data = _torchvision_arrays(base, root, download, image_size)
    if dataset in REDUCED_SIZES:
        size = REDUCED_SIZES[dataset]
        if len(data) <= size:
            raise SearchInputError(f"{dataset} draws {size} images, but {root} holds only {len(data)}")
        data = data.subset(stratified_split(data.labels.numpy(), size, seed=0)[0])
    return data


def _not_found(dataset: str, root: Path, files: str) -> SearchInputError:
    return SearchInputError(
        f"{dataset} not found in {str(root)!r}: pass --download (download=True in Python) to fetch it there, "
        f"or put {files} in that folder (or pass --data-dir with the folder that holds them)"
    )


def _torchvision_arrays(base: str, root: Path, download: bool, image_size: int) -> LabelledImages:
    files = {
        "cifar10": "torchvision's cifar-10-batches-py/",
        "cifar100": "torchvision's cifar-100-python/",
        "svhn": "SVHN's train_32x32.mat",
    }[base]
    try:
        if base == "svhn":
            dataset = torchvision.datasets.SVHN(str(root), split="train", download=download)
            images, labels = torch.from_numpy(dataset.data), torch.as_tensor(dataset.labels)
        else:
            kind = torchvision.datasets.CIFAR10 if base == "cifar10" else torchvision.datasets.CIFAR100
            dataset = kind(str(root), train=True, download=download)
            images, labels = torch.from_numpy(dataset.data).permute(0, 3, 1, 2), torch.as_tensor(dataset.targets)
    except ImportError as error:
        raise SearchInputError(f"reading {base} needs a package that is not installed: {error}") from None
    except RuntimeError as error:
        if "not found" in str(error).lower():
            raise _not_found(base, root, files) from None
        raise
    except OSError as error:
        raise SearchInputError(f"could not download {base} into {str(root)!r}: {error}") from None
    mean, std = _STATISTICS[base]
    images = _resized(images.contiguous(), image_size)
    return LabelledImages(images, labels.long(), 100 if base == "cifar100" else 10, mean, std)


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    chunks = [v2.functional.resize(chunk, [size, size], antialias=True) for chunk in images.split(_DECODE_BATCH)]
    return torch.cat(chunks)


def _imagenet(root: Path, image_size: int, reduced: bool) -> LabelledImages:
    try:
        dataset = torchvision.datasets.ImageNet(str(root), split="train")
    except (RuntimeError, FileNotFoundError):
        raise SearchInputError(
            f"ImageNet not found in {str(root)!r}: torchvision's ImageNet needs ILSVRC2012_devkit_t12.tar.gz and "
            f"ILSVRC2012_img_train.tar (or the extracted train/ folder) there; it cannot be downloaded automatically"
        ) from None
    paths = [path for path, _ in dataset.samples]
    labels = np.asarray(dataset.targets)
    num_classes = 1000
    if reduced:
        classes = reduced_imagenet_classes()
        position = np.full(1000, -1)
        position[classes] = np.arange(len(classes))
        kept = np.flatnonzero(position[labels] >= 0)
        size = REDUCED_SIZES["reduced-imagenet"]
        if len(kept) <= size:
            raise SearchInputError(f"reduced-imagenet draws {size} images, but {root} holds only {len(kept)} of its classes")
        chosen = kept[stratified_split(position[labels[kept]], size, seed=0)[0]]
        paths, labels, num_classes = [paths[i] for i in chosen], position[labels[chosen]], len(classes)
    images = _decode(paths, image_size)
    mean, std = _STATISTICS["imagenet"]
    return LabelledImages(images, torch.as_tensor(labels).long(), num_classes, mean, std)


def _image_folder(root: Path, image_size: int) -> LabelledImages:
    if not root.is_dir():
        raise SearchInputError(f"image folder {str(root)!r} does not exist; pass --data-dir with a DIR/CLASS/IMAGE tree")
    try:
        dataset = torchvision.datasets.ImageFolder(str(root))
    except FileNotFoundError as error:
        raise SearchInputError(f"no images in {str(root)!r}: expected DIR/CLASS/IMAGE files ({error})") from None
    if len(dataset.classes) < 2:
        raise SearchInputError(f"image folder {str(root)!r} has {len(dataset.classes)} class folder; a search needs at least 2")
    images = _decode([path for path, _ in dataset.samples], image_size)
    mean, std = _channel_statistics(images)
    return LabelledImages(images, torch.as_tensor(dataset.targets).long(), len(dataset.classes), mean, std)


class _DecodedFiles(torch.utils.data.Dataset):
    def __init__(self, paths: list[str], image_size: int) -> None:
        self.paths = paths
        self.transform = v2.Compose([v2.PILToTensor(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(torchvision.datasets.folder.pil_loader(self.paths[index]))


def _decode(paths: list[str], image_size: int) -> torch.Tensor:
    """Decode image files into one uint8 tensor [N, 3, S, S], in parallel where there are many."""
    workers = 0 if len(paths) < 4 * _DECODE_BATCH else min(8, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(_DecodedFiles(paths, image_size), batch_size=_DECODE_BATCH, num_workers=workers)
    images = torch.empty(len(paths), 3, image_size, image_size, dtype=torch.uint8)
    start = 0
    for batch in loader:
        images[start : start + len(batch)] = batch
        start += len(batch)
    return images


def _channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(_DECODE_BATCH):
        values = chunk.to(torch.float64) / 255
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-6).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
