"""A fingerprint of the searched data, stored in checkpoints so that a resume on other data is refused.

The contents hashed are the pixels for torchvision's array datasets (cifar,
svhn) and, for image files (without decoding them): the file list (paths
relative to the dataset's folder, so that the folder may move), each file's
size in bytes, and the bytes of :data:`CONTENT_SAMPLE` evenly spaced files. A
search in memory and a streamed search of the same files therefore have the
same fingerprint; a file changed in place to another of the same size, outside
the sample, goes unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import torch

from dada_transforms.files import read_regular_file

from .data import MAX_IMAGE_FILE_BYTES, ImageFiles, LabelledImages, evenly_spaced
from .settings import SearchInputError

CONTENT_SAMPLE = 2000
"""Image files whose bytes (not only their size) the fingerprint hashes."""

FINGERPRINT_KEYS = ("classes", "images", "labels_sha256", "content_sha256", "split_sha256")
"""The keys of :func:`data_fingerprint`'s dictionary."""


def _sha256(*arrays: torch.Tensor | np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(array.cpu().numpy() if isinstance(array, torch.Tensor) else array)
        digest.update(str((values.dtype.str, values.shape)).encode())
        digest.update(memoryview(values.reshape(-1)).cast("B"))
    return digest.hexdigest()


def _files_sha256(files: ImageFiles) -> str:
    """SHA-256 of each file's path relative to the dataset's folder and its size, and of the sampled files' bytes."""
    digest = hashlib.sha256(b"image files\n")
    prefix = os.path.join(files.root, "") if files.root else ""
    sampled = set(evenly_spaced(len(files), CONTENT_SAMPLE).tolist())
    for position, path in enumerate(files.paths):
        try:
            size = os.stat(path).st_size
            read = position in sampled
            content = hashlib.sha256(read_regular_file(path, MAX_IMAGE_FILE_BYTES, "image file")).digest() if read else b""
        except OSError as error:
            raise SearchInputError(f"cannot read image file {path!r} to fingerprint it: {error.strerror or error}") from None
        except ValueError as error:  # not a regular file, or too large
            raise SearchInputError(f"{error}; cannot fingerprint the searched images") from None
        name = path[len(prefix) :] if prefix and path.startswith(prefix) else path
        digest.update(os.fsencode(name.replace(os.sep, "/")) + b"\0" + str(size).encode() + b"\0" + content + b"\n")
    return digest.hexdigest()


def data_fingerprint(
    data: LabelledImages | ImageFiles, train_indices: np.ndarray, val_indices: np.ndarray
) -> dict[str, Any]:
    """Class names, image count, and hashes of the labels, the contents and the search-train/search-val split.

    The same for a dataset of image files whether it is loaded (``LabelledImages``
    with ``files``) or listed (``ImageFiles``); keys :data:`FINGERPRINT_KEYS`.
    """
    files = data if isinstance(data, ImageFiles) else data.files
    return {
        "classes": list(data.classes),
        "images": len(data),
        "labels_sha256": _sha256(data.labels),
        "content_sha256": _files_sha256(files) if files is not None else _sha256(data.images),
        "split_sha256": _sha256(np.asarray(train_indices, dtype=np.int64), np.asarray(val_indices, dtype=np.int64)),
    }


def comparable_fingerprint(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """``fingerprint`` with its class names replaced by their hash (``classes_sha256``): small enough to send around."""
    names = json.dumps(fingerprint["classes"]).encode()
    return {**{key: value for key, value in fingerprint.items() if key != "classes"}, "classes_sha256": hashlib.sha256(names).hexdigest()}


def _shown_classes(classes: list[str]) -> str:
    return f"{len(classes)} classes " + repr(classes[:4])[:-1] + (", ...]" if len(classes) > 4 else "]")


def fingerprint_differences(saved: dict[str, Any], now: dict[str, Any]) -> str:
    """What differs between two fingerprints, in words ("" when they are equal)."""
    differences = []
    if saved["images"] != now["images"]:
        differences.append(f"{saved['images']} images there, {now['images']} now")
    if saved["classes"] != now["classes"]:
        differences.append(f"{_shown_classes(saved['classes'])} there, {_shown_classes(now['classes'])} now")
    if not differences:  # same size and classes: say which contents differ
        hashes = (("labels_sha256", "labels"), ("content_sha256", "contents"), ("split_sha256", "split indices"))
        changed = [what for key, what in hashes if saved[key] != now[key]]
        if changed:
            differences.append(f"the {' and '.join(changed)} differ")
    return "; ".join(differences)
