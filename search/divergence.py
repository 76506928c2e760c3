"""Stopping a diverging search: a non-finite loss or parameter ends it with a clear error, keeping the last good checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .settings import SearchInputError, SearchSettings


class SearchDivergedError(SearchInputError):
    """The training loss or a parameter stopped being finite."""


def check_loss(mean_loss: float, epoch: int, step: int) -> None:
    """Raise SearchDivergedError when the running mean loss of epoch ``epoch`` (from 0) is not finite."""
    if not math.isfinite(mean_loss):
        raise SearchDivergedError(f"the training loss became {mean_loss} in epoch {epoch + 1} (by step {step})")


def check_parameters(modules: dict[str, torch.nn.Module], epoch: int) -> None:
    """Raise SearchDivergedError when a parameter or buffer of ``modules`` holds a non-finite value."""
    for module_name, module in modules.items():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise SearchDivergedError(f"{module_name} parameter {name!r} became non-finite in epoch {epoch + 1}")


def diverged(error: SearchDivergedError, settings: SearchSettings, checkpoint: Path, completed_epochs: int) -> SearchInputError:
    """The error to show: what went wrong, what to change, and what was kept."""
    if completed_epochs > 0:
        kept = (
            f"the checkpoint of epoch {completed_epochs}, the last good one, is kept in {str(checkpoint)!r} "
            f"(--overwrite discards it)"
        )
    else:
        kept = "no epoch was completed, nothing was saved"
    return SearchInputError(
        f"the search diverged: {error}; run it again with a lower --lr (now {settings.lr:g}) "
        f"or --arch-lr (now {settings.arch_lr:g}); {kept}"
    )
