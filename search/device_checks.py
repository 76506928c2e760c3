"""The device a search runs on, and whether the network fits there, checked before any data is loaded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .models import build_model
from .settings import SearchInputError

_COPIES = 4  # weights, gradients, SGD momentum and the unrolled copy of the bilevel step (float32 each)
_ESTIMATE_CLASSES = 1000  # the classifier's size barely matters; the largest dataset's class count bounds it


def indexed_device(device: str | torch.device) -> torch.device:
    """``device`` with its index: ``cuda`` is ``cuda:N`` for the current CUDA device N (cpu as it is).

    Tensors and generators made on ``cuda`` report ``cuda:N``; comparing devices is only
    meaningful between indexed ones.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as an indexed torch.device (default: the current cuda device when available, else cpu).

    Only cpu and available cuda devices; ``cuda`` becomes ``cuda:N`` (:func:`indexed_device`).

    Raises:
        SearchInputError: for another device type, or a CUDA device that is not there.
    """
    if device is None:
        return indexed_device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise SearchInputError(f"device must be cpu, cuda or cuda:N, got {str(device)!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise SearchInputError(f"device {str(device)!r} requested but CUDA is not available here; use --device cpu")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise SearchInputError(f"device {str(device)!r} requested but this machine has {count} CUDA device(s)")
    return indexed_device(resolved)


@contextmanager
def deterministic_cudnn() -> Iterator[None]:
    """cuDNN's deterministic convolution algorithms, without benchmark autotuning, until exit (then restored).

    So that a search resumed on a GPU repeats the uninterrupted one's convolutions.
    Not ``torch.use_deterministic_algorithms``: CUDA kernels without a deterministic
    version (e.g. the backward of adaptive average pooling, which every searched
    network ends with) would raise; those still add atomics' rounding differences.
    """
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _memory_bytes(device: torch.device) -> int | None:
    """The total memory of ``device``: the GPU's for CUDA, the host's for the CPU (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(indexed_device(device))[1]
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _training_bytes(model: str) -> tuple[int, int] | None:
    """``(parameters, bytes)`` of network ``model``'s training state, or None when it cannot be built on the meta device.

    Raises:
        SearchInputError: for an unknown model.
    """
    try:
        with torch.device("meta"):
            network = build_model(model, _ESTIMATE_CLASSES)
    except SearchInputError:
        raise
    except Exception:  # a timm model that cannot be built on the meta device: its real build will tell
        return None
    count = sum(tensor.numel() for tensor in network.parameters())
    return count, _COPIES * 4 * count


def device_data_budget(model: str, device: torch.device) -> int | None:
    """Bytes of decoded images that may be held on a CUDA ``device`` beside network ``model`` (None for the CPU).

    Half of the device memory free now, after the model's training state (the
    other half is left for activations). On the CPU the host's limit
    (:func:`~.data.in_memory_limit`) applies instead.
    """
    if device.type != "cuda":
        return None
    free = torch.cuda.mem_get_info(indexed_device(device))[0]
    training = _training_bytes(model)
    return max(0, free - (training[1] if training else 0)) // 2


def check_model_fits(model: str, device: torch.device, data_bytes: int = 0) -> None:
    """Check that network ``model`` exists and that its training state (and ``data_bytes`` of images) fits ``device``.

    The network is built on the meta device (no memory used); activations come on
    top of the estimate, so passing this check does not guarantee the search fits.
    ``data_bytes``: the searched images this process holds on ``device`` (0 when streamed).

    Raises:
        SearchInputError: for an unknown model, or one whose weights (with the data) need more than the device holds.
    """
    training = _training_bytes(model)
    if training is None:
        return
    count, needed = training
    available = _memory_bytes(device)
    if available is None or needed + data_bytes <= available:
        return
    if data_bytes:
        raise SearchInputError(
            f"model {model!r} needs at least {needed / 1e9:,.1f} GB to train and the searched images "
            f"{data_bytes / 1e9:,.1f} GB, more than the {available / 1e9:,.1f} GB of memory of {device}; "
            f"stream the images (--data-path stream) or choose a smaller model"
        )
    raise SearchInputError(
        f"model {model!r} has {count:,} parameters: training it needs at least {needed / 1e9:,.1f} GB "
        f"(weights, gradients, momentum and the unrolled copy in float32), more than the "
        f"{available / 1e9:,.1f} GB of memory of {device}; choose a smaller model"
    )
