"""Warps computed once: the nearest-resampling sources of each geometric operation and argument.

Without magnitude noise a policy draws every operation's argument from a few values (its
magnitude, signed), so a transform meets the same few dozen warps in every batch. Computing
a warp's sources (PIL's 16.16 fixed point, :func:`~dada_transforms.functional_tensor.nearest_sources`)
costs a dozen small passes; looking it up costs one row copy. The CPU's grouped strategy uses
this cache when :class:`~dada_transforms.DADA` has no magnitude noise.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from .functional_tensor import nearest_sources
from .ops import runs_affine_coefficients

_Key = tuple[int, float]  # (operation index, argument)
_Store = tuple[dict[_Key, int], torch.Tensor]  # each key's row, and the rows [R, H * W]


class WarpCache:
    """The nearest-resampling sources of the geometric operations met so far, by operation and
    argument, for each image size, device and argument dtype, up to ``budget_bytes`` in all
    (beyond it, :meth:`sources` gives None and the caller computes them)."""

    def __init__(self, budget_bytes: int = 32 * 2**20) -> None:
        self.budget_bytes = budget_bytes
        self._stores: dict[tuple[int, int, str, torch.dtype], _Store] = {}
        self._lock = threading.Lock()

    def sources(self, kinds: Sequence[int], arguments: torch.Tensor, height: int, width: int) -> torch.Tensor | None:
        """``[M, H * W]`` sources of the M warps (operation indices ``kinds``, ``arguments`` ``[M]``),
        the same as ``nearest_sources`` of their coefficients; None if new ones do not fit."""
        store_key = (height, width, str(arguments.device), arguments.dtype)
        keys = list(zip(kinds, arguments.tolist()))
        store = self._stores.get(store_key)
        if store is None or any(key not in store[0] for key in keys):
            with self._lock:
                store = self._added(store_key, keys)
            if store is None:
                return None
        rows, stored = store
        return stored.index_select(0, torch.tensor([rows[key] for key in keys], device=stored.device))

    def _added(self, store_key: tuple[int, int, str, torch.dtype], keys: list[_Key]) -> _Store | None:
        """The store of ``store_key`` with the missing ``keys`` computed and added (None: over budget)."""
        height, width, device, dtype = store_key
        rows, stored = self._stores.get(store_key, ({}, None))
        missing = list(dict.fromkeys(key for key in keys if key not in rows))
        if not missing:
            return rows, stored
        used = sum(store.element_size() * store.numel() for _, store in self._stores.values())
        if used + len(missing) * height * width * 8 > self.budget_bytes:
            return None
        runs = [(kind, torch.tensor([argument], dtype=dtype, device=device)) for kind, argument in missing]
        new = nearest_sources(runs_affine_coefficients(runs, height, width), height, width)
        stored = new if stored is None else torch.cat((stored, new))
        rows = {**rows, **{key: len(rows) + offset for offset, key in enumerate(missing)}}
        self._stores[store_key] = (rows, stored)  # one assignment: a reader sees the old store or the new
        return rows, stored
