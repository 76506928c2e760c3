"""The search's per-step batches, from images held on the device or streamed from image files.

Both sources have one method, ``batches(train_batches, val_batches)``: for
step ``k``, the uint8 images ``[n, 3, S, S]`` (not cropped, not flipped) and
int64 labels ``[n]`` of the rows ``train_batches[k]`` of search-train and
``val_batches[k]`` of search-val, on the device.

:class:`StreamedBatches` decodes the files in DataLoader workers (one batch per
step, train and val rows together), pins them, and copies each step's batch to
the device (on a side stream on CUDA) while the previous step runs; the workers
persist from one epoch to the next. Host memory holds at most
``workers * prefetch`` decoded batches, whatever the dataset size.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from .data import DecodedFiles, ImageFiles, LabelledImages, check_bad_images, unreadable_image_error
from .device_checks import indexed_device
from .settings import SearchInputError

Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""One step's ``(train_images, train_labels, val_images, val_labels)``."""


class MemoryBatches:
    """Batches indexed out of search-train and search-val images already on the device."""

    def __init__(self, train: LabelledImages, val: LabelledImages) -> None:
        self.train = train
        self.val = val

    def batches(self, train_batches: Sequence[torch.Tensor], val_batches: Sequence[torch.Tensor]) -> Iterator[Step]:
        """For each step, the images and labels of the rows ``train_batches[k]`` and ``val_batches[k]``."""
        _check_step_count(train_batches, val_batches)
        for train, val in zip(train_batches, val_batches):
            yield self.train.images[train], self.train.labels[train], self.val.images[val], self.val.labels[val]


def default_workers() -> int:
    """DataLoader workers per process: this process's CPUs shared among torchrun's processes on the node, 1 to 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, cpus // processes))


class StreamedBatches:
    """Batches decoded from image files by DataLoader workers, copied to the device ahead of their step.

    Args:
        train, val: the search-train and search-val files (same ``image_size``).
        device: where the batches go.
        workers: decoding processes (0: decode in this process); default
            :func:`default_workers`.
        prefetch: batches each worker decodes ahead (DataLoader's ``prefetch_factor``).
        bad_images: an unreadable file is a :class:`SearchInputError` naming it
            (``"fail"``), or is replaced by the next readable image (and its
            label) of the same batch part (``"skip"``); each replaced file is
            reported once, through ``on_skip`` (default: ``warnings.warn``), and
            listed in :attr:`skipped`.
        on_skip: called with a one-line message for each newly replaced file.

    A ``val_batches`` that repeats the same rows every step (``val_batches="fixed"``)
    is decoded once and the same device tensors are returned for every step (and
    epoch, while the rows stay the same): do not modify them in place.
    """

    def __init__(
        self,
        train: ImageFiles,
        val: ImageFiles,
        device: torch.device,
        *,
        workers: int | None = None,
        prefetch: int = 2,
        bad_images: str = "fail",
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        workers = default_workers() if workers is None else workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise SearchInputError(f"workers must be an integer >= 0, got {workers!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise SearchInputError(f"prefetch must be an integer >= 1, got {prefetch!r}")
        check_bad_images(bad_images)
        if train.image_size != val.image_size:
            raise SearchInputError(f"train and val files decode to other sizes: {train.image_size} and {val.image_size} px")
        self.train = train
        self.val = val
        self.device = indexed_device(device)
        self.workers = workers
        self.prefetch = prefetch
        self.bad_images = bad_images
        self.skipped: list[str] = []  # files replaced so far (bad_images="skip"), in the order found
        self._on_skip = on_skip or (lambda message: warnings.warn(message, stacklevel=2))
        self._files = DecodedFiles(_PackedPaths(train.paths, val.paths), train.image_size)
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._reported: set[str] = set()
        self._fixed_val: tuple[bytes, torch.Tensor, torch.Tensor] | None = None  # (rows, images, labels) on the device
        self._rows = _StepRows([], len(train))  # the DataLoader's batch sampler, refilled for each call of batches()
        self._loader: torch.utils.data.DataLoader | None = None  # kept between calls: persistent workers

    def batches(self, train_batches: Sequence[torch.Tensor], val_batches: Sequence[torch.Tensor]) -> Iterator[Step]:
        """For each step, the images and labels of the rows ``train_batches[k]`` and ``val_batches[k]``.

        The index tensors (int64, CPU or device) are read to the CPU once, at the start.
        """
        _check_step_count(train_batches, val_batches)
        train_rows = _rows_on_cpu(train_batches, len(self.train), "train_batches")
        val_rows = _rows_on_cpu(val_batches, len(self.val), "val_batches")
        if not train_rows:
            return
        fixed = all(np.array_equal(rows, val_rows[0]) for rows in val_rows)
        if not fixed or (self._fixed_val is not None and self._fixed_val[0] != val_rows[0].tobytes()):
            self._fixed_val = None
        decode_val = [not fixed or (step == 0 and self._fixed_val is None) for step in range(len(train_rows))]
        parts = [(train, val if decode else None) for train, val, decode in zip(train_rows, val_rows, decode_val)]
        self._rows.parts = parts
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self._files,
                batch_sampler=self._rows,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=self.prefetch if self.workers else None,
                persistent_workers=self.workers > 0,  # the same workers every epoch (the rows are read per epoch)
            )
        loaded = iter(self._loader)
        finished = False
        try:
            upcoming = self._to_device(next(loaded), *parts[0])
            for step in range(len(parts)):
                images, labels = upcoming
                if self._copy_stream is not None:  # this step's stream waits for this batch's copy only
                    current = torch.cuda.current_stream(self.device)
                    current.wait_stream(self._copy_stream)
                    images.record_stream(current)
                    labels.record_stream(current)
                count = len(parts[step][0])
                if decode_val[step] and fixed:
                    self._fixed_val = (val_rows[0].tobytes(), images[count:], labels[count:])
                if self._fixed_val is not None:
                    yield images[:count], labels[:count], self._fixed_val[1], self._fixed_val[2]
                else:
                    yield images[:count], labels[:count], images[count:], labels[count:]
                # the step's work is queued: now wait for the next decoded batch and start its copy,
                # which runs while the device still computes this step
                if step + 1 < len(parts):
                    upcoming = self._to_device(next(loaded), *parts[step + 1])
            finished = True
        finally:
            del loaded
            if not finished:  # the search stopped early: its workers stop now (not when a traceback lets go)
                self._loader = None

    def _to_device(
        self, loaded: tuple[torch.Tensor, list[str]], train_rows: np.ndarray, val_rows: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A decoded batch's images and labels (unreadable files replaced or raised), their copy to the device started."""
        images, reasons = loaded
        labels = self.train.labels[torch.from_numpy(train_rows)]
        if val_rows is not None:
            labels = torch.cat([labels, self.val.labels[torch.from_numpy(val_rows)]])
        if any(reasons):
            paths = [self.train.paths[row] for row in train_rows.tolist()]
            if val_rows is not None:
                paths += [self.val.paths[row] for row in val_rows.tolist()]
            for position, replacement in self._replacements(paths, list(reasons), len(train_rows)):
                images[position] = images[replacement]
                labels[position] = labels[replacement]
        if self._copy_stream is None:
            return images.to(self.device), labels.to(self.device)
        labels = labels.pin_memory()
        with torch.cuda.stream(self._copy_stream):
            return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _replacements(self, paths: list[str], reasons: list[str], train_count: int) -> list[tuple[int, int]]:
        """For ``"skip"``, each unreadable position and the next readable one of its part (train, val); else raise."""
        replaced = []
        for low, high in ((0, train_count), (train_count, len(paths))):
            readable = [position for position in range(low, high) if not reasons[position]]
            for position in range(low, high):
                if not reasons[position]:
                    continue
                if self.bad_images == "fail":
                    raise unreadable_image_error(paths[position], reasons[position])
                if not readable:
                    raise SearchInputError(
                        f"no image of a batch can be read, e.g. {paths[position]!r} ({reasons[position]}); "
                        f"fix or remove the unreadable images"
                    )
                replaced.append((position, next((other for other in readable if other > position), readable[0])))
                if paths[position] not in self._reported:
                    self._reported.add(paths[position])
                    self.skipped.append(paths[position])
                    self._on_skip(
                        f"cannot read image {paths[position]!r} ({reasons[position]}); using another image of its "
                        f"batch in its place (bad_images='skip')"
                    )
        return replaced


class _PackedPaths(Sequence[str]):
    """File paths in two numpy arrays (encoded bytes, offsets) rather than a tuple of str.

    Forked DataLoader workers read them without touching Python objects'
    reference counts, so the pages stay shared instead of being copied into
    every worker (a tuple of a million str would be, page by page).
    """

    def __init__(self, *parts: Sequence[str]) -> None:
        encoded = [os.fsencode(path) for part in parts for path in part]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(name) for name in encoded], out=self._offsets[1:])
        self._bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        return os.fsdecode(self._bytes[self._offsets[index] : self._offsets[index + 1]].tobytes())


class _StepRows:
    """The DataLoader's ``batch_sampler``: per step, the train rows then the val rows (offset past train) if any."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray | None]], val_offset: int) -> None:
        self.parts = parts
        self.val_offset = val_offset

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self) -> Iterator[list[int]]:
        for train, val in self.parts:
            yield train.tolist() + ([] if val is None else (val + self.val_offset).tolist())


def _check_step_count(train_batches: Sequence[torch.Tensor], val_batches: Sequence[torch.Tensor]) -> None:
    if len(train_batches) != len(val_batches):
        raise ValueError(f"one val batch per train batch: got {len(train_batches)} train and {len(val_batches)} val batches")


def _rows_on_cpu(batches: Sequence[torch.Tensor], count: int, name: str) -> list[np.ndarray]:
    """The index tensors as CPU int64 arrays (one copy from the device for all of them)."""
    for position, batch in enumerate(batches):
        if batch.ndim != 1 or batch.dtype != torch.int64 or len(batch) == 0:
            raise ValueError(f"{name}[{position}] must be a non-empty 1-D int64 tensor, got {batch.dtype} {tuple(batch.shape)}")
    if not batches:
        return []
    rows = torch.cat([batch.to(batches[0].device) for batch in batches]).cpu().numpy()
    if rows.min() < 0 or rows.max() >= count:
        raise ValueError(f"{name} must index rows 0..{count - 1}, got {rows.min() if rows.min() < 0 else rows.max()}")
    return list(np.split(rows, np.cumsum([len(batch) for batch in batches])[:-1]))
