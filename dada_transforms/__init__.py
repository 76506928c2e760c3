"""DADA (Differentiable Automatic Data Augmentation) policies for torchvision and timm.

The public names load on first use (PEP 562), so that ``import dada_transforms`` alone,
as the command lines do before parsing their arguments, does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "DADA": ".transform",
    "OPERATIONS": ".ops",
    "OPERATION_NAMES": ".ops",
    "Operation": ".policy",
    "OperationSpec": ".ops",
    "Policy": ".policy",
    "SubPolicy": ".policy",
    "list_presets": ".presets",
    "load_policy": ".presets",
    "user_preset_dir": ".presets",
}
__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:
    from .ops import OPERATION_NAMES, OPERATIONS, OperationSpec
    from .policy import Operation, Policy, SubPolicy
    from .presets import list_presets, load_policy, user_preset_dir
    from .transform import DADA


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'dada_transforms' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
