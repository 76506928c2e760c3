"""Makes ``auto_augment="dada-..."`` work in timm without changing timm (see docs/timm.md).

``dada_transforms_timm.pth`` calls :func:`install` at interpreter start. It only puts
a finder on ``sys.meta_path``: nothing is imported until timm itself imports
``timm.data.auto_augment`` or ``timm.data.transforms_factory``. The finder lets the real
loader run those modules, then replaces their ``auto_augment_transform`` (and the
``timm.data`` package attribute) by a wrapper that hands config strings starting with
``dada`` to ``dada_transforms.timm_integration`` and every other string, unchanged, to
timm's own function. Standard library only: this module runs in every interpreter.

``DADA_TRANSFORMS_TIMM=0`` switches the hook off.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

ENV_VARIABLE = "DADA_TRANSFORMS_TIMM"
CONFIG_PREFIX = "dada"
PATCHED_MODULES = ("timm.data.auto_augment", "timm.data.transforms_factory", "timm.data")
_FUNCTION_NAME = "auto_augment_transform"
_PATCH_MARKER = "__dada_transforms_patch__"


def is_enabled() -> bool:
    """False when ``DADA_TRANSFORMS_TIMM=0`` switches the hook off."""
    return os.environ.get(ENV_VARIABLE, "1") != "0"


def _dada_aware(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap timm's ``auto_augment_transform``: ``dada...`` configs build a DADA transform."""

    @functools.wraps(original)
    def auto_augment_transform(config_str: str, hparams: dict | None = None) -> Any:
        if isinstance(config_str, str) and config_str.startswith(CONFIG_PREFIX):
            from dada_transforms.timm_integration import dada_transform_from_config

            return dada_transform_from_config(config_str, hparams)
        return original(config_str, hparams)

    setattr(auto_augment_transform, _PATCH_MARKER, True)
    return auto_augment_transform


_WRAPPERS: dict[Callable[..., Any], Callable[..., Any]] = {}  # timm's function -> its one wrapper


def patch_module(module: Any) -> bool:
    """Replace ``module.auto_augment_transform`` by the DADA-aware wrapper (idempotent).

    Every module holding the same timm function gets the same wrapper. Returns True
    when the module holds the wrapper afterwards.
    """
    original = getattr(module, _FUNCTION_NAME, None)
    if original is None:
        return False
    if not getattr(original, _PATCH_MARKER, False):
        if original not in _WRAPPERS:
            _WRAPPERS[original] = _dada_aware(original)
        setattr(module, _FUNCTION_NAME, _WRAPPERS[original])
    return True


def patch_loaded_modules() -> list[str]:
    """Patch those of timm's modules that are already imported; returns their names."""
    return [name for name in PATCHED_MODULES if name in sys.modules and patch_module(sys.modules[name])]


class _PatchingLoader:
    """Runs the real loader, then patches the module; anything else goes to the real loader."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        patch_loaded_modules()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class TimmFinder:
    """``sys.meta_path`` finder that wraps the loader of timm's auto-augment modules."""

    is_dada_timm_finder = True

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in PATCHED_MODULES[:2]:
            return None
        for finder in sys.meta_path:
            if getattr(finder, "is_dada_timm_finder", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install() -> bool:
    """Put the finder first on ``sys.meta_path`` (once) and patch timm if already imported.

    Returns False, doing nothing, when ``DADA_TRANSFORMS_TIMM=0``.
    """
    if not is_enabled():
        return False
    if not any(getattr(finder, "is_dada_timm_finder", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, TimmFinder())
    patch_loaded_modules()
    return True
