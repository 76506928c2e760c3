"""A fingerprint of the searched data, stored in checkpoints so that a resume on other data is refused."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from .data import LabelledImages


def _sha256(*arrays: torch.Tensor | np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(array.cpu().numpy() if isinstance(array, torch.Tensor) else array)
        digest.update(str((values.dtype.str, values.shape)).encode())
        digest.update(memoryview(values.reshape(-1)).cast("B"))
    return digest.hexdigest()


def data_fingerprint(data: LabelledImages, train_indices: np.ndarray, val_indices: np.ndarray) -> dict[str, Any]:
    """Class names, image count, and hashes of the labels, the pixels and the search-train/search-val split."""
    return {
        "classes": list(data.classes),
        "images": len(data),
        "labels_sha256": _sha256(data.labels),
        "pixels_sha256": _sha256(data.images),
        "split_sha256": _sha256(np.asarray(train_indices, dtype=np.int64), np.asarray(val_indices, dtype=np.int64)),
    }


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
        hashes = (("labels_sha256", "labels"), ("pixels_sha256", "pixels"), ("split_sha256", "split indices"))
        changed = [what for key, what in hashes if saved[key] != now[key]]
        if changed:
            differences.append(f"the {' and '.join(changed)} differ")
    return "; ".join(differences)
