"""DADA (Differentiable Automatic Data Augmentation) policies for torchvision and timm."""

from .ops import OPERATION_NAMES, OPERATIONS, OperationSpec
from .policy import Operation, Policy, SubPolicy
from .presets import list_presets, load_policy, user_preset_dir
from .transform import DADA

__all__ = [
    "DADA",
    "OPERATIONS",
    "OPERATION_NAMES",
    "Operation",
    "OperationSpec",
    "Policy",
    "SubPolicy",
    "list_presets",
    "load_policy",
    "user_preset_dir",
]
__version__ = "0.1.0"
