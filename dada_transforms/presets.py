"""Finding policies by name: built-in presets, the user preset directory, files and the Hub.

Resolution order for a string ``spec``:

1. a built-in preset (the JSON files in ``policies/``, shipped with the package);
2. a preset in the user preset directory, ``$DADA_PRESET_DIR`` or, unset,
   ``$XDG_DATA_HOME/dada-transforms/presets`` (``~/.local/share/...``);
   ``dada-search`` writes there by default;
3. a path to a policy JSON file;
4. ``hf-hub:org/name[@revision]``: a Hugging Face Hub repository holding ``policy.json``.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .policy import Policy

PRESET_DIR_VARIABLE = "DADA_PRESET_DIR"
HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class PresetInfo:
    """Where a preset name comes from."""

    name: str
    source: str  # "built-in" or "user"
    location: str
    problem: str | None = None  # why this file does not load by its name (shadowed, invalid), naming it; None if it does


def expand_user(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; ValueError naming it if that user is unknown."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise ValueError(f"cannot expand '~' in {str(path)!r}: no such user or home directory") from None


def user_preset_dir() -> Path:
    """The user preset directory (``$DADA_PRESET_DIR`` overrides the default)."""
    configured = os.environ.get(PRESET_DIR_VARIABLE)
    if configured:
        try:
            return expand_user(configured)
        except ValueError as error:
            raise ValueError(f"{PRESET_DIR_VARIABLE}: {error}") from None
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "dada-transforms" / "presets"


def _builtin_files() -> dict[str, Path]:
    folder = resources.files("dada_transforms.policies")
    return {entry.name[: -len(".json")]: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".json")}


def _user_candidates() -> list[Path]:
    """Every ``*.json`` entry of the user preset directory (files or not), hidden ones left out."""
    folder = user_preset_dir()
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.glob("*.json") if not path.name.startswith("."))


def _user_files() -> dict[str, Path]:
    return {path.stem: path for path in _user_candidates() if path.is_file()}


def preset_files() -> list[PresetInfo]:
    """Every preset file, built-in first, with ``problem`` set on the user files that do not load by name.

    A user ``*.json`` entry does not load by its name when a built-in preset has that
    name (shadowed) or when it is not a valid policy file (the error says why).
    """
    builtin = _builtin_files()
    infos = [PresetInfo(name, "built-in", str(path)) for name, path in sorted(builtin.items())]
    for path in _user_candidates():
        problem = None
        if path.stem in builtin:
            problem = f"{str(path)!r} is shadowed by the built-in preset {path.stem!r}: load it by its path"
        else:
            try:
                Policy.from_json(path)
            except ValueError as error:
                problem = str(error)  # names the file
        infos.append(PresetInfo(path.stem, "user", str(path), problem))
    return infos


def preset_infos() -> list[PresetInfo]:
    """Every preset that loads by name, built-in first: the files of :func:`preset_files` without a problem."""
    return [info for info in preset_files() if info.problem is None]


def list_presets() -> list[str]:
    """The names that ``DADA(name)`` loads: built-in presets, then user presets."""
    return [info.name for info in preset_infos()]


def load_policy(spec: str | os.PathLike[str]) -> Policy:
    """Resolve a preset name, a policy file or ``hf-hub:org/name[@revision]`` to a Policy."""
    if isinstance(spec, os.PathLike):
        return Policy.from_json(expand_user(spec))
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a policy spec must be a preset name, a file path or hf-hub:org/name, got {spec!r}")
    builtin = _builtin_files()
    if spec in builtin:
        return Policy.from_json(builtin[spec])
    user = _user_files()
    if spec in user:
        return Policy.from_json(user[spec])
    if spec.startswith(HUB_PREFIX):
        from .hub import load_hub_policy

        return load_hub_policy(spec[len(HUB_PREFIX) :])
    path = expand_user(spec)
    if _is_file(path) or spec.endswith(".json") or os.sep in spec:
        if not _exists(path):
            raise ValueError(f"policy file {spec!r} does not exist")
        return Policy.from_json(path)
    known = list_presets()
    close = difflib.get_close_matches(spec, known, n=3, cutoff=0.4)
    hint = f" (did you mean {', '.join(repr(name) for name in close)}?)" if close else ""
    raise ValueError(
        f"unknown preset {spec!r}{hint}; known presets: {', '.join(known)}. "
        f"Pass a path to a policy .json file or {HUB_PREFIX}org/name for a Hub preset."
    )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long to be a file: not a file
        return False


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a name the system refuses (too long, a loop of links, ...) is a ValueError naming it."""
    try:
        os.stat(path)
        return True
    except FileNotFoundError:
        if not path.is_symlink():
            return False
        why = "it is a symbolic link to a missing file"
    except OSError as error:
        why = error.strerror or str(error)
    raise ValueError(f"cannot use {str(path)!r} as a policy file: {why}")
