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


def user_preset_dir() -> Path:
    """The user preset directory (``$DADA_PRESET_DIR`` overrides the default)."""
    configured = os.environ.get(PRESET_DIR_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "dada-transforms" / "presets"


def _builtin_files() -> dict[str, Path]:
    folder = resources.files("dada_transforms.policies")
    return {entry.name[: -len(".json")]: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".json")}


def _user_files() -> dict[str, Path]:
    folder = user_preset_dir()
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in folder.glob("*.json") if not path.name.startswith(".")}


def preset_infos() -> list[PresetInfo]:
    """Every preset that loads by name, built-in first; a user preset never shadows a built-in."""
    builtin = _builtin_files()
    infos = [PresetInfo(name, "built-in", str(path)) for name, path in sorted(builtin.items())]
    infos += [
        PresetInfo(name, "user", str(path)) for name, path in sorted(_user_files().items()) if name not in builtin
    ]
    return infos


def list_presets() -> list[str]:
    """The names that ``DADA(name)`` loads: built-in presets, then user presets."""
    return [info.name for info in preset_infos()]


def load_policy(spec: str | os.PathLike[str]) -> Policy:
    """Resolve a preset name, a policy file or ``hf-hub:org/name[@revision]`` to a Policy."""
    if isinstance(spec, os.PathLike):
        return Policy.from_json(Path(spec))
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a policy spec must be a preset name, a file path or hf-hub:org/name, got {spec!r}")
    named = {**_user_files(), **_builtin_files()}
    if spec in named:
        return Policy.from_json(named[spec])
    if spec.startswith(HUB_PREFIX):
        from .hub import load_hub_policy

        return load_hub_policy(spec[len(HUB_PREFIX) :])
    path = Path(spec).expanduser()
    if path.is_file() or spec.endswith(".json") or os.sep in spec:
        if not path.exists():
            raise ValueError(f"policy file {spec!r} does not exist")
        return Policy.from_json(path)
    known = list_presets()
    close = difflib.get_close_matches(spec, known, n=3, cutoff=0.4)
    hint = f" (did you mean {', '.join(repr(name) for name in close)}?)" if close else ""
    raise ValueError(
        f"unknown preset {spec!r}{hint}; known presets: {', '.join(known)}. "
        f"Pass a path to a policy .json file or {HUB_PREFIX}org/name for a Hub preset."
    )
