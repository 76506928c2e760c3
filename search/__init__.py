"""The DADA policy search: search space, learnable augmentation, RELAX and the bilevel step."""

from .augmentation import AugmentationParameters
from .bilevel import BilevelSearchStep, StepStats
from .space import SUB_POLICIES

__all__ = ["SUB_POLICIES", "AugmentationParameters", "BilevelSearchStep", "StepStats"]
