"""The device a search runs on, and whether the network fits there, checked before any data is loaded."""

from __future__ import annotations

import os

import torch

from .models import build_model
from .settings import SearchInputError

_COPIES = 4  # weights, gradients, SGD momentum and the unrolled copy of the bilevel step (float32 each)
_ESTIMATE_CLASSES = 1000  # the classifier's size barely matters; the largest dataset's class count bounds it


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device (default: cuda when available); only cpu and available cuda devices.

    Raises:
        SearchInputError: for another device type, or a CUDA device that is not there.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
    return resolved


def _memory_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_fits(model: str, device: torch.device) -> None:
    """Check that network ``model`` exists and that its training state fits in ``device``'s memory.

    The network is built on the meta device (no memory used); activations come on
    top of the estimate, so passing this check does not guarantee the search fits.

    Raises:
        SearchInputError: for an unknown model, or one whose weights alone need more than the device holds.
    """
    try:
        with torch.device("meta"):
            network = build_model(model, _ESTIMATE_CLASSES)
    except SearchInputError:
        raise
    except Exception:  # a timm model that cannot be built on the meta device: its real build will tell
        return
    count = sum(tensor.numel() for tensor in network.parameters())
    needed = _COPIES * 4 * count
    available = _memory_bytes(device)
    if available is not None and needed > available:
        raise SearchInputError(
            f"model {model!r} has {count:,} parameters: training it needs at least {needed / 1e9:,.1f} GB "
            f"(weights, gradients, momentum and the unrolled copy in float32), more than the "
            f"{available / 1e9:,.1f} GB of memory of {device}; choose a smaller model"
        )
