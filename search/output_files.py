"""Where a search writes, checked before any data is loaded (no torch needed here).

A search named ``NAME`` writing to folder ``OUTPUT`` uses ``OUTPUT/NAME.json``,
``OUTPUT/NAME.safetensors``, the checkpoint folder ``OUTPUT/NAME.checkpoint/``
and the lock file ``OUTPUT/.NAME.lock``; atomic writes go through temporary
files ``OUTPUT/.FILE.XXXXXXXX.tmp`` next to their target.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .settings import SearchInputError

_PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LONGEST_SUFFIX = len(".") + len(".safetensors.XXXXXXXX.tmp")  # the safetensors' temporary file
_DEFAULT_NAME_MAX = 255


@dataclass(frozen=True)
class OutputPaths:
    """The files of one search, all in one resolved folder."""

    policy: Path  # OUTPUT/NAME.json
    parameters: Path  # OUTPUT/NAME.safetensors
    checkpoint: Path  # OUTPUT/NAME.checkpoint/
    lock: Path  # OUTPUT/.NAME.lock


def output_paths(output: str | os.PathLike[str], name: str) -> OutputPaths:
    """The files of preset ``name`` in folder ``output`` (made absolute, symbolic links resolved).

    Raises:
        SearchInputError: for a name that cannot be a file name (or ends in .json).
    """
    if not isinstance(name, str) or not _PRESET_NAME.fullmatch(name) or name.endswith(".json"):
        raise SearchInputError(
            f"preset name must be letters, digits, '.', '_' or '-' (starting with a letter or digit, "
            f"no .json suffix), got {name!r}"
        )
    try:
        folder = Path(output).expanduser().resolve()
    except (OSError, RuntimeError) as error:
        raise SearchInputError(f"output folder {str(output)!r} cannot be used: {error}") from None
    return OutputPaths(
        folder / f"{name}.json", folder / f"{name}.safetensors", folder / f"{name}.checkpoint", folder / f".{name}.lock"
    )


def check_output(paths: OutputPaths, name: str) -> None:
    """Check that the search can write its files: name length, folders that are files, permissions.

    Raises:
        SearchInputError: naming the path at fault.
    """
    folder = paths.policy.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SearchInputError(f"output folder {str(folder)!r} cannot be created: {str(existing)!r} is a file, not a folder")
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = _DEFAULT_NAME_MAX
    if len(name) + _LONGEST_SUFFIX > name_max:
        raise SearchInputError(
            f"preset name is {len(name)} characters long; at most {name_max - _LONGEST_SUFFIX} fit in file names "
            f"in {str(existing)!r}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        where = repr(str(folder)) if existing == folder else f"{str(existing)!r}, where {str(folder)!r} would be created,"
        raise SearchInputError(f"cannot write to the output folder: {where} is read-only or not writable by this user")
    for path in (paths.policy, paths.parameters):
        if path.is_dir():
            raise SearchInputError(f"{str(path)!r} is a folder; the search writes a file there: remove or rename it")
    if paths.checkpoint.is_symlink():
        raise SearchInputError(
            f"{str(paths.checkpoint)!r} is a symbolic link (to {os.readlink(paths.checkpoint)!r}); the search keeps its "
            f"checkpoints in a folder of its own there: remove the link"
        )
    if paths.checkpoint.exists() and not paths.checkpoint.is_dir():
        raise SearchInputError(f"{str(paths.checkpoint)!r} is a file; the search keeps its checkpoints in a folder there")


def check_not_builtin(paths: OutputPaths, name: str) -> None:
    """Refuse a built-in preset's name in the user preset directory: ``DADA(name)`` would load the built-in one.

    Raises:
        SearchInputError: naming the preset and a way out.
    """
    from dada_transforms.presets import preset_infos, user_preset_dir

    if paths.policy.parent != user_preset_dir().expanduser().resolve():
        return
    if any(info.name == name and info.source == "built-in" for info in preset_infos()):
        raise SearchInputError(
            f"preset name {name!r} is a built-in preset, which DADA({name!r}) would load instead of this search's "
            f"result; choose another name (e.g. {name + '-searched'!r}) or pass an output folder"
        )
