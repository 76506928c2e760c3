"""The searched images: a dataset loaded once into a uint8 tensor, its reduced subset, its two halves.

Datasets (``--dataset``):

- ``cifar10``, ``cifar100``, ``svhn`` (the core ``train`` split), ``imagenet``:
  the whole torchvision training set;
- ``reduced-cifar10``/``reduced-cifar100`` (4,000 images), ``reduced-svhn``
  (1,000): the published subsets, drawn stratified by class with scikit-learn's
  ``StratifiedShuffleSplit(random_state=0)`` algorithm (see :mod:`.splits`);
- ``reduced-imagenet``: as the authors drew it, 50,000 images drawn the same
  way over all 1,000 classes, of which those of the 120 classes of
  ``reduced_imagenet_classes.json`` are kept (about 6,000, ~50 per class),
  relabelled 0..119 in that order;
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
from PIL import Image
from torchvision.transforms import v2

from .settings import BAD_IMAGES, SearchInputError
from .splits import reduced_class_subset, stratified_split

REDUCED_SIZES = {"reduced-cifar10": 4000, "reduced-cifar100": 4000, "reduced-svhn": 1000, "reduced-imagenet": 50000}
"""Images drawn for each published reduced dataset (reduced-imagenet then keeps its 120 classes' share)."""

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
    classes: tuple[str, ...] = ()  # class names, in label order
    skipped: tuple[str, ...] = ()  # unreadable image files left out (bad_images="skip")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, indices: np.ndarray | torch.Tensor) -> LabelledImages:
        """The images at ``indices``, in that order."""
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return LabelledImages(
            self.images[indices], self.labels[indices], self.num_classes, self.mean, self.std, self.classes
        )

    def to(self, device: torch.device) -> LabelledImages:
        """The same images and labels on ``device``."""
        return LabelledImages(
            self.images.to(device), self.labels.to(device), self.num_classes, self.mean, self.std, self.classes
        )


def reduced_imagenet_classes() -> list[int]:
    """The 120 ImageNet class indices of the published reduced ImageNet."""
    text = resources.files("dada_transforms.search").joinpath("reduced_imagenet_classes.json").read_text("utf-8")
    return json.loads(text)["classes"]


def split_halves(labels: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Search-train and search-val indices: a stratified 50/50 split (``train_size = n // 2``, seed 0)."""
    labels = np.asarray(torch.as_tensor(labels).cpu())
    return stratified_split(labels, len(labels) // 2, seed=0)


def load_search_images(
    dataset: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    download: bool = False,
    image_size: int = 32,
    bad_images: str = "fail",
) -> LabelledImages:
    """The images searched on for ``dataset``, as a CPU uint8 tensor (the reduced subset where named so).

    ``bad_images`` decides what an unreadable image file (ImageNet, image folders)
    does: ``"fail"`` raises an error naming it, ``"skip"`` leaves it out (listed
    in the result's ``skipped``).

    Raises:
        SearchInputError: when the data is missing (naming the folder to fill),
            cannot be downloaded, or is too small to split.
    """
    if bad_images not in BAD_IMAGES:
        raise SearchInputError(f"bad_images must be one of {', '.join(BAD_IMAGES)}, got {bad_images!r}")
    if dataset == "imagefolder":
        if data_dir is None:
            raise SearchInputError("--dataset imagefolder needs --data-dir DIR, a folder of DIR/CLASS/IMAGE files")
        return _image_folder(Path(data_dir).expanduser(), image_size, bad_images)
    root = Path("data" if data_dir is None else data_dir).expanduser()
    base = dataset.removeprefix("reduced-")
    if base == "imagenet":
        return _imagenet(root, image_size, dataset == "reduced-imagenet", bad_images)
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
            classes = tuple(str(digit) for digit in range(10))
        else:
            kind = torchvision.datasets.CIFAR10 if base == "cifar10" else torchvision.datasets.CIFAR100
            dataset = kind(str(root), train=True, download=download)
            images, labels = torch.from_numpy(dataset.data).permute(0, 3, 1, 2), torch.as_tensor(dataset.targets)
            classes = tuple(dataset.classes)
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
    return LabelledImages(images, labels.long(), len(classes), mean, std, classes)


def _resized(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    chunks = [v2.functional.resize(chunk, [size, size], antialias=True) for chunk in images.split(_DECODE_BATCH)]
    return torch.cat(chunks)


def _imagenet(root: Path, image_size: int, reduced: bool, bad_images: str) -> LabelledImages:
    try:
        dataset = torchvision.datasets.ImageNet(str(root), split="train")
    except (RuntimeError, FileNotFoundError):
        raise SearchInputError(
            f"ImageNet not found in {str(root)!r}: torchvision's ImageNet needs ILSVRC2012_devkit_t12.tar.gz and "
            f"ILSVRC2012_img_train.tar (or the extracted train/ folder) there; it cannot be downloaded automatically"
        ) from None
    paths = [path for path, _ in dataset.samples]
    labels = np.asarray(dataset.targets)
    classes = tuple(dataset.wnids)
    if reduced:
        kept_classes = reduced_imagenet_classes()
        position = np.full(1000, -1)
        position[kept_classes] = np.arange(len(kept_classes))
        size = REDUCED_SIZES["reduced-imagenet"]
        if len(labels) <= size:
            raise SearchInputError(f"reduced-imagenet draws {size} images, but {root} holds only {len(labels)}")
        try:
            chosen = reduced_class_subset(labels, size, kept_classes, seed=0)
        except ValueError as error:
            raise SearchInputError(f"cannot draw reduced-imagenet from {str(root)!r}: {error}") from None
        paths, labels = [paths[i] for i in chosen], position[labels[chosen]]
        classes = tuple(classes[index] for index in kept_classes)
    images, readable = _decode_readable(paths, image_size, bad_images)
    mean, std = _STATISTICS["imagenet"]
    skipped = tuple(path for path, ok in zip(paths, readable) if not ok)
    labels = torch.as_tensor(labels).long()[torch.as_tensor(readable)]
    return LabelledImages(images, labels, len(classes), mean, std, classes, skipped)


def _image_folder(root: Path, image_size: int, bad_images: str) -> LabelledImages:
    if not root.is_dir():
        raise SearchInputError(f"image folder {str(root)!r} does not exist; pass --data-dir with a DIR/CLASS/IMAGE tree")
    extensions = ", ".join(torchvision.datasets.folder.IMG_EXTENSIONS)
    try:
        dataset = torchvision.datasets.ImageFolder(str(root), allow_empty=True)
    except FileNotFoundError:
        raise SearchInputError(f"no class folders in {str(root)!r}: expected DIR/CLASS/IMAGE files") from None
    if len(dataset.classes) < 2:
        raise SearchInputError(f"image folder {str(root)!r} has {len(dataset.classes)} class folder; a search needs at least 2")
    counts = np.bincount(np.asarray(dataset.targets, dtype=np.int64), minlength=len(dataset.classes))
    empty = [name for name, count in zip(dataset.classes, counts) if count == 0]
    if empty:
        raise SearchInputError(
            f"class folder{'s' if len(empty) > 1 else ''} {', '.join(repr(name) for name in empty[:5])} in {str(root)!r} "
            f"hold{'' if len(empty) > 1 else 's'} no images (files ending in {extensions}); add images or remove "
            f"{'them' if len(empty) > 1 else 'it'}"
        )
    paths = [path for path, _ in dataset.samples]
    images, readable = _decode_readable(paths, image_size, bad_images)
    labels = torch.as_tensor(dataset.targets).long()[torch.as_tensor(readable)]
    counts = np.bincount(labels.numpy(), minlength=len(dataset.classes))
    few = [name for name, count in zip(dataset.classes, counts) if count < 2]
    if few:
        readable_note = " readable" if not all(readable) else ""
        raise SearchInputError(
            f"class folder{'s' if len(few) > 1 else ''} {', '.join(repr(name) for name in few[:5])} in {str(root)!r} "
            f"hold{'' if len(few) > 1 else 's'} fewer than 2{readable_note} images; the search splits every class in two halves"
        )
    mean, std = _channel_statistics(images)
    skipped = tuple(path for path, ok in zip(paths, readable) if not ok)
    return LabelledImages(images, labels, len(dataset.classes), mean, std, tuple(dataset.classes), skipped)


class _DecodedFiles(torch.utils.data.Dataset):
    """Image files decoded to uint8 [3, S, S]; an unreadable file gives zeros and the reason (decoding runs in workers)."""

    def __init__(self, paths: list[str], image_size: int) -> None:
        self.paths = paths
        self.image_size = image_size
        self.transform = v2.Compose([v2.PILToTensor(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        try:
            return self.transform(torchvision.datasets.folder.pil_loader(self.paths[index])), ""
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            path = self.paths[index]
            if isinstance(error, Image.UnidentifiedImageError):
                reason = "not an image format that Pillow reads"
            else:
                reason = str(error).replace(repr(path), "").replace(path, "").strip(" :") or type(error).__name__
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), reason


def _decode(paths: list[str], image_size: int) -> torch.Tensor:
    """Decode image files into one uint8 tensor [N, 3, S, S]; an unreadable file is an error naming it."""
    return _decode_readable(paths, image_size, "fail")[0]


def _decode_readable(paths: list[str], image_size: int, bad_images: str) -> tuple[torch.Tensor, list[bool]]:
    """Decode image files into one uint8 tensor [N, 3, S, S] (in parallel where there are many).

    Returns the images of the readable files and, per file, whether it was readable.

    Raises:
        SearchInputError: naming the first unreadable file, when ``bad_images`` is ``"fail"``.
    """
    workers = 0 if len(paths) < 4 * _DECODE_BATCH else min(8, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(_DecodedFiles(paths, image_size), batch_size=_DECODE_BATCH, num_workers=workers)
    images = torch.empty(len(paths), 3, image_size, image_size, dtype=torch.uint8)
    readable = [True] * len(paths)
    start = 0
    for batch, reasons in loader:
        for offset, reason in enumerate(reasons):
            if reason and bad_images == "fail":
                raise SearchInputError(
                    f"cannot read image {paths[start + offset]!r} ({reason}); fix or remove it, "
                    f"or pass --bad-images skip (bad_images='skip' in Python) to leave unreadable images out"
                )
            readable[start + offset] = not reason
        images[start : start + len(batch)] = batch
        start += len(batch)
    return (images if all(readable) else images[torch.as_tensor(readable)]), readable


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
