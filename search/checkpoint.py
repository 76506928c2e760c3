"""Per-epoch search checkpoints: tensors in safetensors, everything else in JSON, both written atomically.

A checkpoint lives in ``OUTPUT/PRESET.checkpoint/``:

- ``epoch-NNNN.safetensors``: the model's state (``model.*``), the augmentation
  parameters (``augmentation.*``) and the tensors of the optimisers' states
  (``step.*``);
- ``checkpoint.json``: the format, the number of completed epochs, the search
  settings, a fingerprint of the searched data, the per-epoch history, the name
  and SHA-256 of the tensor file, and the non-tensor part of the optimisers'
  states (tensors replaced by ``{"tensor": key}``; dictionaries with non-string
  keys kept as key/value pairs).

The tensor file is written first and named by epoch, then the JSON that points
to it, then older tensor files are removed: an interruption at any moment
leaves a consistent checkpoint. No pickle is involved. Reading a checkpoint
back validates everything (JSON shape and types, epoch range, settings, data,
the tensor file's hash, tensor names, shapes, dtypes and finiteness) before
anything is restored.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from dada_transforms.atomic import write_bytes_atomic, write_text_atomic
from dada_transforms.files import read_regular_file
from dada_transforms.policy import parse_json

from .fingerprint import FINGERPRINT_KEYS, fingerprint_differences
from .methods import method_for
from .output_files import OutputPaths
from .settings import ADDED_SETTINGS, SearchInputError, SearchSettings

FORMAT_NAME = "dada-search-checkpoint"
FORMAT_VERSION = 4  # 4: settings gained "crop", history entries "objective" (the noise floor's input), "processes"
INDEX_FILE = "checkpoint.json"
_MAX_INDEX_BYTES = 64 * 2**20
_MAX_DEPTH = 32
_KINDS = ("tensor", "dict", "pairs", "list", "value")


@dataclass
class SearchState:
    """What a checkpoint restores."""

    epoch: int  # completed epochs
    settings: SearchSettings
    model: dict[str, torch.Tensor]
    augmentation: dict[str, torch.Tensor]
    step: dict[str, Any]
    history: list[dict[str, Any]]
    data: dict[str, Any]  # see fingerprint.data_fingerprint
    processes: int = 1  # how many processes (torchrun) shared each batch: a resume needs as many


class _Invalid(ValueError):
    """Why a checkpoint cannot be resumed from."""


def _cannot_resume(directory: Path, why: object) -> SearchInputError:
    return SearchInputError(
        f"cannot resume from {str(directory)!r}: {why}; remove that folder, or run with --overwrite instead of "
        f"--resume to start afresh"
    )


def has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a checkpoint (valid or not)."""
    return (Path(directory) / INDEX_FILE).exists()


def saved_epoch(directory: Path) -> int | None:
    """The completed epochs recorded in ``directory``'s checkpoint, or None when unreadable (for messages only)."""
    try:
        epoch = parse_json(read_regular_file(Path(directory) / INDEX_FILE, _MAX_INDEX_BYTES, INDEX_FILE), _MAX_INDEX_BYTES)
        epoch = epoch.get("epoch")
    except (ValueError, AttributeError):
        return None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


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


def _join_tensors(encoded: Any, tensors: dict[str, torch.Tensor], used: set[str], depth: int = 0) -> Any:
    """The value that :func:`_split_tensors` encoded; every node's shape and type is checked."""
    if depth > _MAX_DEPTH:
        raise _Invalid(f"the optimiser state is nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(encoded, dict) or len(encoded) != 1 or next(iter(encoded)) not in _KINDS:
        raise _Invalid(f"optimiser state node must be one of {{{', '.join(_KINDS)}: ...}}, got {encoded!r:.80}")
    (kind, content), = encoded.items()
    if kind == "tensor":
        if not isinstance(content, str) or content not in tensors or not content.startswith("step."):
            raise _Invalid(f"optimiser state names a tensor that is not in the tensor file: {content!r:.80}")
        used.add(content)
        return tensors[content]
    if kind == "dict" and isinstance(content, dict):
        return {key: _join_tensors(item, tensors, used, depth + 1) for key, item in content.items()}
    if kind == "pairs" and isinstance(content, list):
        pairs = {}
        for pair in content:
            if not isinstance(pair, list) or len(pair) != 2 or isinstance(pair[0], bool) or not isinstance(pair[0], (int, str)):
                raise _Invalid(f"optimiser state pairs must be [int or str, value], got {pair!r:.80}")
            pairs[pair[0]] = _join_tensors(pair[1], tensors, used, depth + 1)
        return pairs
    if kind == "list" and isinstance(content, list):
        return [_join_tensors(item, tensors, used, depth + 1) for item in content]
    if kind == "value" and (content is None or isinstance(content, (bool, int, float, str))):
        return content
    raise _Invalid(f"optimiser state node {kind!r} holds a {type(content).__name__}")


def save_checkpoint(directory: Path, state: SearchState) -> None:
    """Write ``state`` into ``directory`` (atomically, see the module notes).

    Raises:
        SearchInputError: when a file cannot be written (e.g. a full disk); the previous checkpoint is then intact.
    """
    directory = Path(directory)
    tensors = {f"model.{key}": _cpu(value) for key, value in state.model.items()}
    tensors.update({f"augmentation.{key}": _cpu(value) for key, value in state.augmentation.items()})
    step = _split_tensors(state.step, "step", tensors)
    tensor_file = f"epoch-{state.epoch:04d}.safetensors"
    content = save(tensors, metadata={"format": FORMAT_NAME})
    index = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "epoch": state.epoch,
        "settings": state.settings.to_dict(),
        "data": state.data,
        "history": state.history,
        "tensors": tensor_file,
        "tensors_sha256": hashlib.sha256(content).hexdigest(),
        "step": step,
        "processes": state.processes,
    }
    try:
        write_bytes_atomic(directory / tensor_file, content)
        write_text_atomic(directory / INDEX_FILE, json.dumps(index, indent=1, allow_nan=False) + "\n")
    except (OSError, SafetensorError) as error:
        before = state.epoch - 1
        kept = (
            f"the checkpoint of epoch {before} there is intact: fix that and run the same command with --resume"
            if before > 0 and has_checkpoint(directory)
            else "no earlier checkpoint was saved"
        )
        raise SearchInputError(
            f"cannot write the checkpoint of epoch {state.epoch} to {str(directory)!r}: "
            f"{getattr(error, 'strerror', None) or error}; {kept}"
        ) from None
    for old in directory.glob("epoch-*.safetensors"):
        if old.name != tensor_file:
            old.unlink(missing_ok=True)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_settings(directory: Path, saved: Any, settings: SearchSettings) -> None:
    now = settings.to_dict()
    if isinstance(saved, dict):
        saved = {**ADDED_SETTINGS, **saved}  # added without a new format version
    if not isinstance(saved, dict) or set(saved) != set(now):
        raise _Invalid(f"'settings' must be an object with the keys {sorted(now)}")
    for key, value in saved.items():
        if type(value) is not type(now[key]) or (isinstance(value, float) and not math.isfinite(value)):
            raise _Invalid(f"setting {key!r} is {value!r:.80}, not a {type(now[key]).__name__}")
    changed = ", ".join(f"{key}: {saved[key]!r} there, {now[key]!r} now" for key in sorted(now) if saved[key] != now[key])
    if changed:
        raise SearchInputError(
            f"the checkpoint in {str(directory)!r} was made with other settings ({changed}); "
            f"repeat the original settings to resume, or run with --overwrite instead of --resume to start afresh"
        )


_HISTORY_KEYS = ("epoch", "loss", "accuracy", "objective")  # objective: noise_floor.objective_summary


def _check_history(history: Any, epoch: int, shapes: dict[str, tuple[int, ...]]) -> None:
    """Each entry as the search writes it: the epoch, a finite loss, an accuracy and the method's
    snapshots (``shapes``: its :attr:`.methods.SearchMethod.history_shapes`) in [0, 1]."""
    if not isinstance(history, list) or len(history) != epoch:
        raise _Invalid(f"'history' must be a list of {epoch} entries, one per completed epoch")
    for number, entry in enumerate(history, start=1):
        if not isinstance(entry, dict) or entry.get("epoch") != number or not _is_integer(entry["epoch"]):
            raise _Invalid(f"history entry {number} must be an object with \"epoch\": {number}")
        for key, value in entry.items():
            values = value if isinstance(value, list) else [value]
            if not all(_is_number(item) for item in values):
                raise _Invalid(f"history entry {number}'s {key!r} must be finite numbers, got {value!r:.80}")
            if key in ("accuracy", *shapes) and not all(0 <= item <= 1 for item in values):
                raise _Invalid(f"history entry {number}'s {key!r} must be in [0, 1], got {value!r:.80}")
            if key in shapes and (not isinstance(value, list) or len(value) != math.prod(shapes[key])):
                raise _Invalid(f"history entry {number}'s {key!r} must be a list of {math.prod(shapes[key])} numbers")
        if set(entry) != {*_HISTORY_KEYS, *shapes}:
            raise _Invalid(
                f"history entry {number} must have exactly the keys {[*_HISTORY_KEYS, *shapes]}, got {sorted(entry)}"
            )


def _check_data(data: Any) -> None:
    valid = (
        isinstance(data, dict)
        and set(data) == set(FINGERPRINT_KEYS)
        and isinstance(data["classes"], list)
        and all(isinstance(name, str) for name in data["classes"])
        and _is_integer(data["images"])
        and all(isinstance(data[key], str) for key in FINGERPRINT_KEYS if key.endswith("_sha256"))
    )
    if not valid:
        raise _Invalid("'data' must be a data fingerprint (classes, images and three SHA-256 hashes)")


def read_checkpoint(directory: Path, settings: SearchSettings) -> dict[str, Any] | None:
    """The validated ``checkpoint.json`` of ``directory``, or None when there is none.

    Raises:
        SearchInputError: when it was made with other settings, or is not a valid checkpoint of ``settings``.
    """
    directory = Path(directory)
    path = directory / INDEX_FILE
    if not path.exists():
        return None
    try:
        content = read_regular_file(path, _MAX_INDEX_BYTES, INDEX_FILE)
        try:
            index = parse_json(content, _MAX_INDEX_BYTES)
        except ValueError as error:
            raise _Invalid(f"{INDEX_FILE}: {error}") from None
        if not isinstance(index, dict):
            raise _Invalid(f"{INDEX_FILE} must hold a JSON object, got a {type(index).__name__}")
        if index.get("format") != FORMAT_NAME or not _is_integer(index.get("version")) or index["version"] != FORMAT_VERSION:
            raise _Invalid(f"{INDEX_FILE} is not a version-{FORMAT_VERSION} {FORMAT_NAME} file")
        expected = {"format", "version", "epoch", "settings", "data", "history", "tensors", "tensors_sha256", "step", "processes"}
        if set(index) != expected:
            raise _Invalid(f"{INDEX_FILE} must have exactly the keys {sorted(expected)}")
        _check_settings(directory, index["settings"], settings)
        epoch = index["epoch"]
        if not _is_integer(epoch) or not 1 <= epoch <= settings.epochs:
            raise _Invalid(f"'epoch' must be an integer in [1, {settings.epochs}] (the search's epochs), got {epoch!r:.80}")
        _check_history(index["history"], epoch, method_for(settings).history_shapes)
        _check_data(index["data"])
        if index["tensors"] != f"epoch-{epoch:04d}.safetensors":
            raise _Invalid(f"'tensors' must be 'epoch-{epoch:04d}.safetensors', got {index['tensors']!r:.80}")
        if not isinstance(index["tensors_sha256"], str):
            raise _Invalid("'tensors_sha256' must be a string")
        if not _is_integer(index["processes"]) or index["processes"] < 1:
            raise _Invalid(f"'processes' must be an integer >= 1, got {index['processes']!r:.80}")
        return index
    except SearchInputError:
        raise
    except ValueError as error:  # _Invalid, or the file cannot be read
        raise _cannot_resume(directory, error) from None


def _check_tensors(what: str, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _Invalid(f"{what} tensors do not match this search: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, value in tensors.items():
        if value.shape != expected[key].shape or value.dtype != expected[key].dtype:
            raise _Invalid(
                f"{what} tensor {key!r} is {value.dtype} {tuple(value.shape)}, "
                f"expected {expected[key].dtype} {tuple(expected[key].shape)}"
            )


def _check_optimizer(name: str, optimizer: torch.optim.Optimizer, fresh_groups: list[dict[str, Any]], scheduled: bool) -> None:
    """After loading: hyperparameters as this search's settings make them, finite step counts, buffers shaped as
    parameters. The learning rate equals this search's, or, when ``scheduled`` (the schedule sets it at each
    epoch), lies in [0, the settings' learning rate]."""
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        if set(group) != set(fresh):
            raise _Invalid(f"{name} hyperparameters must be {sorted(fresh)}")
        for key, value in fresh.items():
            saved = group.get(key)
            saved = tuple(saved) if isinstance(saved, list) else saved
            if key == "lr":
                if not (_is_number(saved) and (0 <= saved <= value if scheduled else saved == value)):
                    bound = f"in [0, {value!r}]" if scheduled else repr(value)
                    raise _Invalid(f"{name} learning rate is {saved!r:.80}, this search's settings give {bound}")
            elif key != "params" and (saved != value or type(saved) is not type(value)):
                raise _Invalid(f"{name} hyperparameter {key!r} is {saved!r:.80}, expected {value!r:.80}")
    parameters = {id(p): p for group in optimizer.param_groups for p in group["params"]}
    for parameter, state in optimizer.state.items():
        if not isinstance(parameter, torch.Tensor) or id(parameter) not in parameters or not isinstance(state, dict):
            raise _Invalid(f"{name} state refers to parameters that this search does not have")
        for key, value in state.items():
            if key == "step" and not (isinstance(value, torch.Tensor) and value.numel() == 1 and 0 <= float(value) < 2**53):
                raise _Invalid(f"{name} state 'step' must be a step count, got {value!r:.80}")
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != parameter.shape:
                raise _Invalid(f"{name} state {key!r} has shape {tuple(value.shape)}, its parameter {tuple(parameter.shape)}")


def max_tensor_file_bytes(network: torch.nn.Module, augmentation: Any) -> int:
    """The largest tensor file a checkpoint of this search may have (its states, with room to spare)."""
    tensors = [*network.state_dict().values(), *augmentation.tensors().values()]
    return 4 * sum(tensor.numel() * tensor.element_size() for tensor in tensors) + 2**20


def restore_checkpoint(
    directory: Path,
    index: dict[str, Any],
    data: dict[str, Any],
    network: torch.nn.Module,
    augmentation: torch.nn.Module,
    step: Any,
) -> tuple[int, list[dict[str, Any]]]:
    """Load the checkpoint described by ``index`` (from :func:`read_checkpoint`) into the search's objects.

    ``data`` is the fingerprint of the data searched now; ``augmentation`` the
    method's parameters (:attr:`.methods.MethodRun.parameters`), ``step`` its step.
    Returns the completed epochs and the history.

    Raises:
        SearchInputError: for a checkpoint of other data, or tensors that do not fit or are not intact.
    """
    directory = Path(directory)
    differences = fingerprint_differences(index["data"], data)
    if differences:
        raise SearchInputError(
            f"the checkpoint in {str(directory)!r} was made on other data ({differences}); resume with the data it "
            f"was made on, or run with --overwrite instead of --resume to start afresh"
        )
    model_now, augmentation_now = network.state_dict(), augmentation.tensors()
    optimizers = {"weight optimiser": step.weight_optimizer, "arch optimiser": step.arch_optimizer}
    fresh_groups = {
        name: [dict(group) for group in optimizer.param_groups] for name, optimizer in optimizers.items()
    }
    try:
        limit = max_tensor_file_bytes(network, augmentation)
        try:
            content = read_regular_file(directory / index["tensors"], limit, "tensor file")
        except ValueError as error:
            raise _Invalid(str(error)) from None  # missing, not a regular file, or larger than this search's state
        if hashlib.sha256(content).hexdigest() != index["tensors_sha256"]:
            raise _Invalid(f"{index['tensors']} does not match its SHA-256 in {INDEX_FILE} (changed or damaged)")
        tensors = load(content)
        for key, value in tensors.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise _Invalid(f"tensor {key!r} holds non-finite values")
        model = {key[len("model.") :]: value for key, value in tensors.items() if key.startswith("model.")}
        saved_augmentation = {
            key[len("augmentation.") :]: value for key, value in tensors.items() if key.startswith("augmentation.")
        }
        _check_tensors("model", model, model_now)
        _check_tensors("augmentation", saved_augmentation, augmentation_now)
        used: set[str] = set()
        step_state = _join_tensors(index["step"], tensors, used)
        unused = sorted(key for key in tensors if key.startswith("step.") and key not in used)
        outside = sorted(key for key in tensors if not key.startswith(("model.", "augmentation.", "step.")))
        if unused or outside:
            raise _Invalid(f"unexpected tensors in {index['tensors']}: {(unused + outside)[:5]}")
        network.load_state_dict(model)
        device = next(augmentation.parameters()).device
        augmentation.load_tensors({key: value.to(device) for key, value in saved_augmentation.items()})
        step.load_state_dict(step_state)
        for name, optimizer in optimizers.items():
            _check_optimizer(name, optimizer, fresh_groups[name], scheduled=optimizer is step.weight_optimizer)
    except (_Invalid, OSError, SafetensorError, ValueError, KeyError, TypeError, RuntimeError, RecursionError) as error:
        raise _cannot_resume(directory, error) from None
    return index["epoch"], list(index["history"])


def checkpoint_to_resume(paths: OutputPaths, settings: SearchSettings, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The validated checkpoint a search continues from (None: start afresh); ``overwrite`` removes one.

    A finished result (``NAME.json`` or ``NAME.safetensors``) is protected like a
    checkpoint: only ``overwrite`` lets a new search replace it (when the result is
    written, not now). So is a checkpoint folder holding tensor files but no
    ``checkpoint.json`` (never removed without ``overwrite``).

    Raises:
        SearchInputError: when a checkpoint, an incomplete checkpoint or a finished
            result exists and neither ``resume`` nor ``overwrite`` says what to do
            with it, when ``resume`` finds a finished result, or (resuming) when the
            checkpoint is not valid.
    """
    directory = Path(paths.checkpoint)
    if resume and overwrite:
        raise SearchInputError("resume and overwrite exclude each other: resume continues the checkpoint, overwrite discards it")
    if has_checkpoint(directory):
        if resume:
            return read_checkpoint(directory, settings)
        if overwrite:
            shutil.rmtree(directory)
            return None
        epoch = saved_epoch(directory)
        done = f" after epoch {epoch}" if epoch is not None else ""
        raise SearchInputError(
            f"{str(directory)!r} holds the checkpoint of an interrupted search{done}: run the same command with "
            f"--resume to continue it, or with --overwrite to discard it and start afresh"
        )
    if overwrite:
        if directory.is_dir():
            shutil.rmtree(directory)
        return None
    leftovers = sorted(path.name for path in directory.glob("epoch-*.safetensors")) if directory.is_dir() else []
    if leftovers:
        raise SearchInputError(
            f"{str(directory)!r} holds {leftovers[-1]} but no {INDEX_FILE} (an incomplete checkpoint, which cannot be "
            f"resumed): remove that folder, or run with --overwrite to discard it and start afresh"
        )
    finished = [path for path in (paths.policy, paths.parameters) if path.exists()]
    if finished and resume:
        raise SearchInputError(
            f"the search is finished: {str(finished[0])!r} holds its result and there is no checkpoint to resume; "
            f"run with --overwrite instead of --resume to search again and replace it"
        )
    if finished:
        raise SearchInputError(
            f"{str(finished[0])!r} holds the result of a finished search: run with --overwrite to replace it, or "
            f"choose another --name or --output"
        )
    return None
