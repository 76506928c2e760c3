"""The searched images: listed as files or loaded into a uint8 tensor, their reduced subset, their two halves.

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
are resized (shorter side) and centre-cropped to it when decoded.

Two data paths (:func:`choose_data_path`): ``load_search_images`` decodes the
whole dataset into memory (:class:`LabelledImages`); for the file-based
datasets (:data:`FILE_DATASETS`), ``list_search_images`` only lists the files
(:class:`ImageFiles`), which :mod:`.streaming` decodes batch by batch. Both list
the same files with the same labels, and an image folder's normalisation
statistics are the same numbers in both: those of an evenly spaced sample of at
most :data:`STATISTICS_SAMPLE` listed files, computed exactly (integer pixel
histograms), so that the order and batching of the decoding cannot change them.
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from dada_transforms.files import read_regular_file

from .settings import BAD_IMAGES, FILE_DATASETS, SearchInputError, check_data_options
from .splits import reduced_class_subset, stratified_split

REDUCED_SIZES = {"reduced-cifar10": 4000, "reduced-cifar100": 4000, "reduced-svhn": 1000, "reduced-imagenet": 50000}
"""Images drawn for each published reduced dataset (reduced-imagenet then keeps its 120 classes' share)."""

STATISTICS_SAMPLE = 2000
"""An image folder's mean and std are those of at most this many of its files, evenly spaced in listing order."""

_STATISTICS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_DECODE_BATCH = 256
MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024
"""The largest image file read (larger ones are unreadable images)."""
_GIB = 1 << 30


@dataclass(frozen=True)
class ImageFiles:
    """Image files (not decoded) and their labels, with the normalisation statistics of their dataset."""

    paths: tuple[str, ...]
    labels: torch.Tensor  # int64 [N]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...]  # class names, in label order
    image_size: int  # decoded to uint8 [3, image_size, image_size]
    skipped: tuple[str, ...] = ()  # unreadable files found while listing and left out (bad_images="skip")
    root: str = ""  # the dataset's folder: the data fingerprint hashes the paths relative to it

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray | torch.Tensor | Sequence[int]) -> ImageFiles:
        """The files at ``indices``, in that order."""
        indices = torch.as_tensor(indices, dtype=torch.long).cpu()
        return ImageFiles(
            tuple(self.paths[index] for index in indices.tolist()),
            self.labels[indices],
            self.num_classes,
            self.mean,
            self.std,
            self.classes,
            self.image_size,
            root=self.root,
        )


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
    files: ImageFiles | None = None  # the files the rows were decoded from, row for row (None: torchvision's arrays)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, indices: np.ndarray | torch.Tensor) -> LabelledImages:
        """The images at ``indices``, in that order."""
        indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        files = None if self.files is None else self.files.subset(indices)
        return LabelledImages(
            self.images[indices], self.labels[indices], self.num_classes, self.mean, self.std, self.classes, files=files
        )

    def to(self, device: torch.device) -> LabelledImages:
        """The same images and labels on ``device``."""
        return LabelledImages(
            self.images.to(device),
            self.labels.to(device),
            self.num_classes,
            self.mean,
            self.std,
            self.classes,
            files=self.files,
        )


def reduced_imagenet_classes() -> list[int]:
    """The 120 ImageNet class indices of the published reduced ImageNet."""
    text = resources.files("dada_transforms.search").joinpath("reduced_imagenet_classes.json").read_text("utf-8")
    return json.loads(text)["classes"]


def split_halves(labels: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Search-train and search-val indices: a stratified 50/50 split (``train_size = n // 2``, seed 0)."""
    labels = np.asarray(torch.as_tensor(labels).cpu())
    return stratified_split(labels, len(labels) // 2, seed=0)


def evenly_spaced(count: int, at_most: int) -> np.ndarray:
    """Positions ``0..count - 1``: all of them, or ``at_most`` evenly spaced ones (the first included)."""
    if count <= at_most:
        return np.arange(count, dtype=np.int64)
    return np.arange(at_most, dtype=np.int64) * count // at_most


def in_memory_limit() -> int:
    """Bytes of decoded images (all processes of this node together) up to which ``"auto"`` keeps them in memory.

    A quarter of this machine's physical memory (or of the container's
    cgroup memory limit, when lower), and at most 16 GiB.
    """
    physical = 64 * _GIB
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: the 16 GiB cap alone
        pass
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            physical = min(physical, int(Path(limit_file).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max"
            continue
    return min(physical // 4, 16 * _GIB)


def choose_data_path(
    dataset: str,
    image_count: int,
    image_size: int,
    data_path: str,
    processes_on_node: int = 1,
    device_budget: int | None = None,
) -> str:
    """``"memory"`` (decode everything with :func:`load_search_images`) or ``"stream"`` (:func:`list_search_images`).

    ``data_path`` ``"memory"`` and ``"stream"`` are taken as they are. ``"auto"``
    streams a file-based dataset (:data:`FILE_DATASETS`) when its decoded size,
    ``image_count * 3 * image_size**2`` bytes, times ``processes_on_node``
    (each process holds its own copy) exceeds :func:`in_memory_limit`, or when
    one copy exceeds ``device_budget``, the bytes each process's GPU can hold
    (:func:`~.device_checks.device_data_budget`; None on the CPU); the
    others are always in memory (``image_count`` is then not used).

    Raises:
        SearchInputError: for an unknown ``data_path``, or ``"stream"`` for a
            dataset that torchvision reads into memory (cifar, svhn).
    """
    check_data_options(dataset, data_path, None)
    if isinstance(processes_on_node, bool) or not isinstance(processes_on_node, int) or processes_on_node < 1:
        raise SearchInputError(f"processes on this node must be an integer >= 1, got {processes_on_node!r}")
    if dataset not in FILE_DATASETS:
        return "memory"
    if data_path != "auto":
        return data_path
    decoded = int(image_count) * 3 * int(image_size) ** 2
    too_large_for_device = device_budget is not None and decoded > device_budget
    return "stream" if too_large_for_device or decoded * processes_on_node > in_memory_limit() else "memory"


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
    check_bad_images(bad_images)
    if dataset in FILE_DATASETS:
        return _decoded(_listing(dataset, data_dir), image_size, bad_images, statistics=None)
    root = Path("data" if data_dir is None else data_dir).expanduser()
    data = _torchvision_arrays(dataset.removeprefix("reduced-"), root, download, image_size)
    if dataset in REDUCED_SIZES:
        size = REDUCED_SIZES[dataset]
        if len(data) <= size:
            raise SearchInputError(f"{dataset} draws {size} images, but {root} holds only {len(data)}")
        data = data.subset(stratified_split(data.labels.numpy(), size, seed=0)[0])
    return data


def open_search_images(
    dataset: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    download: bool = False,
    image_size: int = 32,
    bad_images: str = "fail",
    data_path: str = "auto",
    processes_on_node: int = 1,
    device_budget: int | None = None,
) -> LabelledImages | ImageFiles:
    """The searched images, decoded into memory (:class:`LabelledImages`) or listed to be streamed (:class:`ImageFiles`).

    Which one follows :func:`choose_data_path` (from the number of listed files, before
    anything is decoded); both give the same images, labels and statistics.
    """
    check_bad_images(bad_images)
    if dataset in FILE_DATASETS:
        listing = _listing(dataset, data_dir)
        chosen = choose_data_path(dataset, len(listing.paths), image_size, data_path, processes_on_node, device_budget)
        if chosen == "stream":
            return _listed_files(listing, image_size, bad_images)
        return _decoded(listing, image_size, bad_images, statistics=None)
    choose_data_path(dataset, 0, image_size, data_path)  # refuses "stream"
    return load_search_images(dataset, data_dir, download=download, image_size=image_size, bad_images=bad_images)


def list_search_images(
    dataset: str, data_dir: str | os.PathLike[str] | None, *, image_size: int, bad_images: str = "fail"
) -> ImageFiles:
    """The image files searched on for a file-based ``dataset`` (:data:`FILE_DATASETS`), not decoded.

    The same files, labels and classes as :func:`load_search_images`. For an
    image folder, the statistics sample is decoded here: an unreadable file in
    it is an error (``bad_images="fail"``) or is left out (``"skip"``, listed in
    ``skipped``); unreadable files elsewhere are found while streaming.

    Raises:
        SearchInputError: for a dataset that is not file-based, missing data,
            or an unreadable file in the statistics sample (``"fail"``).
    """
    check_bad_images(bad_images)
    check_data_options(dataset, "stream", None)
    return _listed_files(_listing(dataset, data_dir), image_size, bad_images)


def _listed_files(listing: _Listing, image_size: int, bad_images: str) -> ImageFiles:
    """The listing as :class:`ImageFiles`, with an image folder's statistics from its decoded sample."""
    readable = np.ones(len(listing.paths), dtype=bool)
    statistics = listing.statistics
    if statistics is None:
        sample = evenly_spaced(len(listing.paths), STATISTICS_SAMPLE)
        histogram = torch.zeros(3, 256, dtype=torch.int64)
        for start, images, reasons in _decoded_batches([listing.paths[i] for i in sample], image_size, bad_images):
            ok = np.array([not reason for reason in reasons])
            readable[sample[start : start + len(reasons)][~ok]] = False
            histogram += _channel_histogram(images[torch.from_numpy(ok)])
        statistics = _statistics_from_histogram(histogram)
    return _files(listing, readable, image_size, statistics)


class DecodedFiles(torch.utils.data.Dataset):
    """Image files decoded to uint8 [3, S, S] and a reason, "" when readable (an unreadable file gives zeros).

    The one decoding of image files (both data paths): RGB, resized so that the
    shorter side is ``image_size`` (antialiased), centre-cropped. The reason is
    returned, not raised, so that DataLoader workers hand it to the main process.
    """

    def __init__(self, paths: Sequence[str], image_size: int) -> None:
        self.paths = paths
        self.image_size = image_size
        self.transform = v2.Compose([v2.PILToTensor(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.paths[index]
        try:
            return self.transform(_rgb_picture(path)), ""
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            if isinstance(error, Image.UnidentifiedImageError):
                reason = "not an image format that Pillow reads"
            else:
                reason = str(error).replace(f"image file {path!r}", "").replace(repr(path), "").replace(path, "")
                reason = reason.removeprefix("cannot read :").strip(" :") or type(error).__name__
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), " ".join(reason.split())


def _rgb_picture(path: str) -> Image.Image:
    """The image file ``path`` (a regular file, at most :data:`MAX_IMAGE_FILE_BYTES`) as an 8-bit RGB picture.

    Raises:
        ValueError: for a file that is not regular or too large, or pixels of more than 8 bits
            (16-bit PNGs would otherwise be clipped to white, as ``DADA`` refuses them).
        OSError: for a file that Pillow cannot decode.
    """
    data = read_regular_file(path, MAX_IMAGE_FILE_BYTES, "image file")
    with Image.open(io.BytesIO(data)) as picture:
        if picture.mode.startswith(("I", "F")):
            raise ValueError(
                f"{picture.mode} pixels of more than 8 bits, which the search would clip to white; "
                f"convert the images to 8-bit RGB"
            )
        return picture.convert("RGB")


def unreadable_image_error(path: str, reason: str) -> SearchInputError:
    """The error (one line) for an unreadable image file with ``bad_images="fail"``."""
    return SearchInputError(
        f"cannot read image {path!r} ({reason}); fix or remove it, "
        f"or pass --bad-images skip (bad_images='skip' in Python) to leave unreadable images out"
    )


def check_bad_images(bad_images: str) -> None:
    if bad_images not in BAD_IMAGES:
        raise SearchInputError(f"bad_images must be one of {', '.join(BAD_IMAGES)}, got {bad_images!r}")


@dataclass(frozen=True)
class _Listing:
    """A file-based dataset's files in order, their labels and class names; the fixed statistics (None: sampled)."""

    paths: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    root: str
    statistics: tuple[tuple[float, ...], tuple[float, ...]] | None
    folder: bool  # an image folder: every class must keep 2 images (else only when unreadable files are left out)


def _listing(dataset: str, data_dir: str | os.PathLike[str] | None) -> _Listing:
    if dataset == "imagefolder":
        if data_dir is None:
            raise SearchInputError("--dataset imagefolder needs --data-dir DIR, a folder of DIR/CLASS/IMAGE files")
        return _image_folder(Path(data_dir).expanduser())
    return _imagenet(Path("data" if data_dir is None else data_dir).expanduser(), dataset == "reduced-imagenet")


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


def _imagenet(root: Path, reduced: bool) -> _Listing:
    try:
        dataset = torchvision.datasets.ImageNet(str(root), split="train")
    except (RuntimeError, FileNotFoundError):
        raise SearchInputError(
            f"ImageNet not found in {str(root)!r}: torchvision's ImageNet needs ILSVRC2012_devkit_t12.tar.gz and "
            f"ILSVRC2012_img_train.tar (or the extracted train/ folder) there; it cannot be downloaded automatically"
        ) from None
    paths = [path for path, _ in dataset.samples]
    labels = np.asarray(dataset.targets, dtype=np.int64)
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
    return _Listing(paths, labels, classes, str(root), _STATISTICS["imagenet"], False)


def check_image_folder(root: Path, option: str) -> None:
    """Raise a SearchInputError naming ``option`` unless ``root`` is a folder (what is wrong: missing, a file, a link loop)."""
    try:
        is_folder = stat.S_ISDIR(root.stat().st_mode)
    except OSError as error:
        problem = "does not exist" if isinstance(error, FileNotFoundError) else f"cannot be read ({error.strerror or error})"
    else:
        problem = None if is_folder else "is not a folder"
    if problem:
        raise SearchInputError(f"image folder {str(root)!r} {problem}; pass {option} with a DIR/CLASS/IMAGE tree")


def _image_folder(root: Path) -> _Listing:
    check_image_folder(root, "--data-dir")
    extensions = ", ".join(torchvision.datasets.folder.IMG_EXTENSIONS)
    try:
        dataset = torchvision.datasets.ImageFolder(str(root), allow_empty=True)
    except FileNotFoundError:
        raise SearchInputError(f"no class folders in {str(root)!r}: expected DIR/CLASS/IMAGE files") from None
    if len(dataset.classes) < 2:
        raise SearchInputError(f"image folder {str(root)!r} has {len(dataset.classes)} class folder; a search needs at least 2")
    labels = np.asarray(dataset.targets, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(dataset.classes))
    empty = [name for name, count in zip(dataset.classes, counts) if count == 0]
    if empty:
        raise SearchInputError(
            f"class folder{'s' if len(empty) > 1 else ''} {', '.join(repr(name) for name in empty[:5])} in {str(root)!r} "
            f"hold{'' if len(empty) > 1 else 's'} no images (files ending in {extensions}); add images or remove "
            f"{'them' if len(empty) > 1 else 'it'}"
        )
    return _Listing([path for path, _ in dataset.samples], labels, tuple(dataset.classes), str(root), None, True)


def _files(
    listing: _Listing, readable: np.ndarray, image_size: int, statistics: tuple[tuple[float, ...], tuple[float, ...]]
) -> ImageFiles:
    """The listed files that are ``readable`` (the others in ``skipped``), checking that every class keeps 2 images."""
    labels = listing.labels[readable]
    counts = np.bincount(labels, minlength=len(listing.classes))
    checked = listing.folder or not readable.all()
    few = [name for name, count in zip(listing.classes, counts) if count < 2 and checked]
    if few:
        readable_note = " readable" if not readable.all() else ""
        raise SearchInputError(
            f"class folder{'s' if len(few) > 1 else ''} {', '.join(repr(name) for name in few[:5])} in "
            f"{listing.root!r} hold{'' if len(few) > 1 else 's'} fewer than 2{readable_note} images; the search splits "
            f"every class in two halves"
        )
    paths = tuple(path for path, ok in zip(listing.paths, readable.tolist()) if ok)
    skipped = tuple(path for path, ok in zip(listing.paths, readable.tolist()) if not ok)
    mean, std = statistics
    return ImageFiles(
        paths, torch.from_numpy(labels), len(listing.classes), mean, std, listing.classes, image_size, skipped, listing.root
    )


def _decoded(
    listing: _Listing, image_size: int, bad_images: str, statistics: tuple[tuple[float, ...], tuple[float, ...]] | None
) -> LabelledImages:
    """Decode every listed file; the statistics are the given ones, the listing's, or those of the sampled rows."""
    images, readable = _decode_readable(listing.paths, image_size, bad_images)
    readable = np.asarray(readable, dtype=bool)
    statistics = statistics or listing.statistics
    if statistics is None:
        sample = evenly_spaced(len(listing.paths), STATISTICS_SAMPLE)
        rows = (np.cumsum(readable) - 1)[sample[readable[sample]]]  # listing position -> row of `images`
        histogram = torch.zeros(3, 256, dtype=torch.int64)
        for chunk in torch.from_numpy(rows).split(_DECODE_BATCH):
            histogram += _channel_histogram(images[chunk])
        statistics = _statistics_from_histogram(histogram)
    files = _files(listing, readable, image_size, statistics)
    return LabelledImages(images, files.labels, files.num_classes, files.mean, files.std, files.classes, files.skipped, files)


def _decode(paths: list[str], image_size: int) -> torch.Tensor:
    """Decode image files into one uint8 tensor [N, 3, S, S]; an unreadable file is an error naming it."""
    return _decode_readable(paths, image_size, "fail")[0]


def _decoded_batches(
    paths: Sequence[str], image_size: int, bad_images: str
) -> Iterator[tuple[int, torch.Tensor, list[str]]]:
    """``(start, images, reasons)`` for consecutive batches of ``paths``, decoded in parallel where there are many.

    Raises:
        SearchInputError: naming the first unreadable file, when ``bad_images`` is ``"fail"``.
    """
    workers = 0 if len(paths) < 4 * _DECODE_BATCH else min(8, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(DecodedFiles(paths, image_size), batch_size=_DECODE_BATCH, num_workers=workers)
    start = 0
    for images, reasons in loader:
        for offset, reason in enumerate(reasons):
            if reason and bad_images == "fail":
                raise unreadable_image_error(paths[start + offset], reason)
        yield start, images, list(reasons)
        start += len(reasons)


def _decode_readable(paths: list[str], image_size: int, bad_images: str) -> tuple[torch.Tensor, list[bool]]:
    """Decode image files into one uint8 tensor [N, 3, S, S]: the readable files' images and, per file, whether readable.

    Raises:
        SearchInputError: naming the first unreadable file, when ``bad_images`` is ``"fail"``.
    """
    images = torch.empty(len(paths), 3, image_size, image_size, dtype=torch.uint8)
    readable = [True] * len(paths)
    for start, batch, reasons in _decoded_batches(paths, image_size, bad_images):
        images[start : start + len(batch)] = batch
        readable[start : start + len(batch)] = [not reason for reason in reasons]
    return (images if all(readable) else images[torch.as_tensor(readable)]), readable


def _channel_histogram(images: torch.Tensor) -> torch.Tensor:
    """Counts of each uint8 value per channel, int64 [3, 256]."""
    return torch.stack([torch.bincount(images[:, channel].reshape(-1), minlength=256) for channel in range(3)])


def _statistics_from_histogram(histogram: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixel values / 255 (exact sums: the same numbers however the pixels were batched)."""
    values = torch.arange(256, dtype=torch.int64)
    count = histogram[0].sum().item()
    if count == 0:
        raise SearchInputError("no readable image to compute the normalisation statistics from")
    total = (histogram * values).sum(1).to(torch.float64)
    squares = (histogram * values.square()).sum(1).to(torch.float64)
    mean = total / (255 * count)
    std = (squares / (255**2 * count) - mean.square()).clamp_min(1e-6).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
