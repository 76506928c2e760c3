"""The DADA policy search: search space, learnable augmentation, RELAX, the bilevel step and the search methods.

The names below are imported on first use, so that ``dada-search`` can check its
arguments before the heavy modules (torch, torchvision, timm) load.
"""

from importlib import import_module
from typing import Any

_MODULE_OF = {
    "SUB_POLICIES": "space",
    "AugmentationParameters": "augmentation",
    "BilevelSearchStep": "bilevel",
    "StepStats": "bilevel",
    "SearchInputError": "settings",
    "SearchSettings": "settings",
    "resolve_settings": "settings",
    "SearchMethod": "methods",
    "MethodRun": "methods",
    "method_for": "methods",
    "SearchResult": "loop",
    "search": "loop",
}

__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
