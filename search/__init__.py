"""The DADA policy search: search space, learnable augmentation, RELAX and the bilevel step."""

from .augmentation import AugmentationParameters
from .bilevel import BilevelSearchStep, StepStats
from .space import SUB_POLICIES

__all__ = ["SUB_POLICIES", "AugmentationParameters", "BilevelSearchStep", "StepStats"]

from .loop import SearchResult, search
from .settings import SearchInputError, SearchSettings, resolve_settings

__all__ += ["SearchInputError", "SearchResult", "SearchSettings", "resolve_settings", "search"]
