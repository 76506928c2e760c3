"""DADA in timm: ``auto_augment="dada-<preset>[-mstd<x>]"`` (``--aa`` in timm's train.py).

The config string is ``dada-<spec>`` followed by optional ``-<suffix>`` parts:

- ``<spec>`` is anything :func:`dada_transforms.load_policy` resolves: a preset name
  (user presets may contain ``-``), a policy file path, or ``hf-hub:org/name[@revision]``.
  For names and files the longest ``-``-joined prefix that exists is the spec; for Hub
  specs, trailing parts that look like suffixes are suffixes.
- ``mstd<x>``: Gaussian noise on the magnitudes, in timm's level units (0..10, as in
  ``rand-m9-mstd0.5``); DADA's magnitudes are on [0, 1], so the DADA transform gets
  ``magnitude_std = x / 10``.

timm's hparams: ``img_mean`` becomes the geometric ``fill``; ``interpolation`` (given
by timm unless ``--train-interpolation`` is ``random``) becomes the resampling of the
geometric operations, else the paper's nearest; ``magnitude_std`` (timm level units)
is used when no ``mstd`` suffix is given. Cutout keeps the paper's fill.

The first DADA transform built for each config string in a process logs one INFO
line naming the policy on the ``train`` logger, the one timm's train.py logs to.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from .presets import HUB_PREFIX, expand_user, list_presets, load_policy
from .transform import DADA

CONFIG_PREFIX = "dada-"
TIMM_LEVELS = 10.0  # timm's magnitudes and their noise are in levels 0..10
KNOWN_SUFFIXES = ("mstd",)
_SUFFIX_PATTERN = re.compile(r"([a-z]+)(\d.*)")
LOGGER_NAME = "train"
"""The logger of timm's train.py (``_logger = logging.getLogger('train')``)."""
_LOGGED: set[str] = set()  # the config strings already logged in this process


def _suffix_value(part: str, config_str: str) -> tuple[str, float] | None:
    """``("mstd", 0.5)`` for ``"mstd0.5"``; None when ``part`` is not shaped like a known suffix."""
    match = _SUFFIX_PATTERN.fullmatch(part)
    if match is None or match.group(1) not in KNOWN_SUFFIXES:
        return None
    try:
        value = float(match.group(2))
    except ValueError:
        raise ValueError(f"suffix {part!r} in {config_str!r} needs a number after {match.group(1)!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"suffix {part!r} in {config_str!r} needs a finite number >= 0")
    return match.group(1), value


def _resolves_locally(spec: str, presets: list[str]) -> bool:
    """A known preset or an existing file (a path that cannot exist, e.g. ``~nouser/x`` or an
    over-long name, does not resolve; loading it later says why)."""
    if spec in presets:
        return True
    try:
        return expand_user(spec).is_file()
    except (ValueError, OSError):
        return False


def _peel_suffixes(parts: list[str], config_str: str) -> tuple[str, list[str]]:
    end = len(parts)
    while end > 1 and _suffix_value(parts[end - 1], config_str) is not None:
        end -= 1
    return "-".join(parts[:end]), parts[end:]


def _split_spec(parts: list[str], config_str: str) -> tuple[str, list[str]]:
    """Split the '-'-separated parts after ``dada-`` into the policy spec and the suffix parts."""
    if not parts[0].startswith(HUB_PREFIX):
        presets = list_presets()
        for end in range(len(parts), 0, -1):
            spec = "-".join(parts[:end])
            if _resolves_locally(spec, presets):
                return spec, parts[end:]
    return _peel_suffixes(parts, config_str)


def parse_config(config_str: str) -> tuple[str, float | None]:
    """Read ``dada-<spec>[-mstd<x>]``: the policy spec and the magnitude noise in timm levels (None if absent)."""
    if not isinstance(config_str, str) or not config_str.startswith(CONFIG_PREFIX) or config_str == CONFIG_PREFIX:
        raise ValueError(
            f"a DADA auto-augment config is 'dada-<preset>[-mstd<x>]' (e.g. 'dada-imagenet'), got {config_str!r}; "
            f"known presets: {', '.join(list_presets())}"
        )
    spec, suffix_parts = _split_spec(config_str[len(CONFIG_PREFIX) :].split("-"), config_str)
    suffixes: dict[str, float] = {}
    for part in suffix_parts:
        parsed = _suffix_value(part, config_str)
        if parsed is None:
            raise ValueError(
                f"unknown suffix {part!r} in {config_str!r} (after the policy {spec!r}); "
                f"known suffixes: {', '.join(name + '<number>' for name in KNOWN_SUFFIXES)}"
            )
        if parsed[0] in suffixes:
            raise ValueError(f"suffix {parsed[0]!r} given twice in {config_str!r}")
        suffixes[parsed[0]] = parsed[1]
    return spec, suffixes.get("mstd")


def _interpolation(hparams: dict[str, Any]) -> Any:
    interpolation = hparams.get("interpolation", "nearest")
    if isinstance(interpolation, (list, tuple)):
        raise ValueError(
            f"DADA needs one interpolation, timm passed a random choice {interpolation!r}; "
            f"set --train-interpolation to 'random' (DADA then uses nearest), 'bilinear' or 'bicubic'"
        )
    return interpolation


def dada_transform_from_config(config_str: str, hparams: dict[str, Any] | None = None) -> DADA:
    """Build the DADA transform for a timm auto-augment config string and timm's hparams."""
    spec, level_std = parse_config(config_str)
    hparams = hparams or {}
    if level_std is None:
        level_std = hparams.get("magnitude_std", 0.0)
        if not isinstance(level_std, (int, float)) or not math.isfinite(level_std) or level_std < 0:
            raise ValueError(f"timm's hparam magnitude_std must be a finite number >= 0 for DADA, got {level_std!r}")
    policy = load_policy(spec)
    try:
        transform = DADA(
            policy,
            interpolation=_interpolation(hparams),
            fill=hparams.get("img_mean"),
            magnitude_std=level_std / TIMM_LEVELS,
        )
    except ValueError as error:
        raise ValueError(f"cannot build {config_str!r} from timm's hparams: {error}") from error
    if config_str not in _LOGGED:
        _LOGGED.add(config_str)
        logging.getLogger(LOGGER_NAME).info(
            "DADA: applying policy %r (%d sub-policies) for auto_augment %r, interpolation %s, magnitude_std %g",
            policy.name or spec, len(policy), config_str, transform.interpolation, transform.magnitude_std,
        )
    return transform


def register() -> list[str]:
    """Make timm accept ``dada-...`` auto-augment configs in this process, now.

    For editable installs (where the ``.pth`` hook may be missing) and for
    ``DADA_TRANSFORMS_TIMM=0``. Imports timm; returns the names of the patched modules.
    """
    import timm.data  # noqa: F401  (imports the modules to patch)

    import dada_transforms_timm_hook

    return dada_transforms_timm_hook.patch_loaded_modules()
