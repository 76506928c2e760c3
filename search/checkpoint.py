"""Per-epoch search checkpoints: tensors in safetensors, everything else in JSON, both written atomically.

A checkpoint lives in ``OUTPUT/PRESET.checkpoint/``:

- ``epoch-NNNN.safetensors``: the model's state (``model.*``), the augmentation
  parameters (``augmentation.*``) and the tensors of the optimisers' states
  (``step.*``);
- ``checkpoint.json``: the format, the number of completed epochs, the search
  settings, the seed, the per-epoch history, the name of the tensor file, and
  the non-tensor part of the optimisers' states (tensors replaced by
  ``{"tensor": key}``; dictionaries with non-string keys kept as key/value pairs).

The tensor file is written first and named by epoch, then the JSON that points
to it, then older tensor files are removed: an interruption at any moment
leaves a consistent checkpoint. No pickle is involved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dada_transforms.atomic import write_atomic, write_text_atomic

from .settings import SearchInputError, SearchSettings

FORMAT_NAME = "dada-search-checkpoint"
FORMAT_VERSION = 1
_INDEX = "checkpoint.json"


@dataclass
class SearchState:
    """What a checkpoint restores."""

    epoch: int  # completed epochs
    settings: SearchSettings
    model: dict[str, torch.Tensor]
    augmentation: dict[str, torch.Tensor]
    step: dict[str, Any]
    history: list[dict[str, float]]


def checkpoint_dir(output: Path, name: str) -> Path:
    """The folder of the checkpoints of preset ``name`` written to ``output``."""
    return Path(output) / f"{name}.checkpoint"


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()


def _split_tensors(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-ready copy of ``value`` with every tensor moved into ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = _cpu(value)
        return {"tensor": prefix}
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return {"dict": {key: _split_tensors(item, f"{prefix}.{key}", tensors) for key, item in value.items()}}
        return {"pairs": [[key, _split_tensors(item, f"{prefix}.{key}", tensors)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"list": [_split_tensors(item, f"{prefix}.{index}", tensors) for index, item in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot store a {type(value).__name__} in a search checkpoint ({prefix})")


def _join_tensors(encoded: Any, tensors: dict[str, torch.Tensor]) -> Any:
    (kind, content), = encoded.items()
    if kind == "tensor":
        return tensors[content]
    if kind == "dict":
        return {key: _join_tensors(item, tensors) for key, item in content.items()}
    if kind == "pairs":
        return {key: _join_tensors(item, tensors) for key, item in content}
    if kind == "list":
        return [_join_tensors(item, tensors) for item in content]
    return content


def save_checkpoint(directory: Path, state: SearchState) -> None:
    """Write ``state`` into ``directory`` (atomically, see the module notes)."""
    directory = Path(directory)
    tensors = {f"model.{key}": _cpu(value) for key, value in state.model.items()}
    tensors.update({f"augmentation.{key}": _cpu(value) for key, value in state.augmentation.items()})
    step = _split_tensors(state.step, "step", tensors)
    tensor_file = f"epoch-{state.epoch:04d}.safetensors"
    write_atomic(directory / tensor_file, lambda path: save_file(tensors, str(path), metadata={"format": FORMAT_NAME}))
    index = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "epoch": state.epoch,
        "settings": state.settings.to_dict(),
        "history": state.history,
        "tensors": tensor_file,
        "step": step,
    }
    write_text_atomic(directory / _INDEX, json.dumps(index, indent=1) + "\n")
    for old in directory.glob("epoch-*.safetensors"):
        if old.name != tensor_file:
            old.unlink(missing_ok=True)


def load_checkpoint(directory: Path) -> SearchState | None:
    """The state saved in ``directory``, or None when there is no checkpoint.

    Raises:
        SearchInputError: for a checkpoint that cannot be read.
    """
    index_path = Path(directory) / _INDEX
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("format") != FORMAT_NAME or index.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a version-{FORMAT_VERSION} {FORMAT_NAME} file")
        tensors = load_file(str(Path(directory) / index["tensors"]))
        model = {key[len("model.") :]: value for key, value in tensors.items() if key.startswith("model.")}
        augmentation = {
            key[len("augmentation.") :]: value for key, value in tensors.items() if key.startswith("augmentation.")
        }
        return SearchState(
            epoch=index["epoch"],
            settings=SearchSettings.from_dict(index["settings"]),
            model=model,
            augmentation=augmentation,
            step=_join_tensors(index["step"], tensors),
            history=index["history"],
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SearchInputError(
            f"cannot resume from the checkpoint in {str(directory)!r}: {error}; "
            f"remove that folder to start afresh"
        ) from None
