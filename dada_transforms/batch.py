"""Applying drawn operations to a batch ``[N, C, H, W]``, slot by slot, with no Python loop per image.

Two strategies give the same bytes:

- **fixed shapes** (accelerators, and under ``torch.compile``): every tensor's shape
  depends only on the batch's shape, never on the draw, so nothing waits for the
  device and the whole application compiles into one graph. Per slot: one affine
  warp (identity coefficients for images that drew no geometric operation), on
  uint8 one lookup-table gather for all colour operations (each image's table is its
  own operation's, or the identity), then each remaining kind (Color, Sharpness,
  Cutout, and the colour kinds on float images) on the whole batch, kept where drawn.
- **grouped** (the CPU, eager): each operation kind runs only on the images that drew
  it (counted on the host; per slot the images are ordered by kind with one argsort, so
  that each kind's images are one run): one affine warp for the geometric runs, on uint8
  one lookup-table gather for the colour runs that need a table, each other run on its
  own; the batch's order is restored once, after the last slot. On the CPU a
  data-dependent shape costs nothing, and skipping undrawn images is several times
  faster than full-batch passes (measured: 224px batches, ImageNet policy). The warps'
  sources (nearest resampling) of all slots are computed together, or looked up in a
  :class:`~dada_transforms.warp_cache.WarpCache` when the caller keeps one (a policy
  without magnitude noise meets the same few dozen warps in every batch).
"""

from __future__ import annotations

import functools
import itertools
import types
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import NamedTuple

import torch

from .functional_tensor import (
    TensorOptions,
    affine,
    colour_table,
    constant,
    lookup_levels,
    nearest_sources,
    select,
    warp_nearest,
)
from .ops import OPERATION_NAMES, OPERATIONS, runs_affine_coefficients
from .warp_cache import WarpCache

_KERNELS = tuple(OPERATIONS[name].tensor for name in OPERATION_NAMES)
_GEOMETRIC = frozenset(index for index, name in enumerate(OPERATION_NAMES) if OPERATIONS[name].geometric)
_COLOUR = frozenset(index for index, kernel in enumerate(_KERNELS) if hasattr(kernel, "levels_of"))
# colour kinds applied through a table on uint8 by the grouped strategy (the others map uint8 pixels directly)
_TABLED = frozenset(index for index in _COLOUR if not _KERNELS[index].integer)
# the grouped strategy's order of kinds: the geometric ones, the tabled ones, the others
_GROUPED_ORDER = tuple(
    sorted(range(len(OPERATION_NAMES)), key=lambda index: (index not in _GEOMETRIC, index not in _TABLED))
)
_GROUPED_POSITIONS = torch.tensor([0] + [1 + _GROUPED_ORDER.index(index) for index in range(len(OPERATION_NAMES))])
_ALL_KINDS = tuple(range(len(OPERATION_NAMES)))


def uses_fixed_shapes(device: torch.device) -> bool:
    """Whether a batch on ``device`` is applied with fixed shapes (no host synchronisation)."""
    return device.type != "cpu" or torch.compiler.is_compiling()


def apply_operations(
    images: torch.Tensor,
    operations: torch.Tensor,
    applied: torch.Tensor,
    arguments: torch.Tensor,
    cutout_centers: torch.Tensor,
    options: TensorOptions,
    kinds_per_slot: Iterable[Iterable[int]] | None = None,
    fixed_shapes: bool | None = None,
    warp_cache: WarpCache | None = None,
) -> torch.Tensor:
    """Apply, slot by slot, each image's operation where ``applied`` is set.

    Args:
        images: ``[N, C, H, W]`` uint8 or float in [0, 1]; not modified.
        operations: ``[N, K]`` indices into ``OPERATION_NAMES`` (-1 = none).
        applied: ``[N, K]`` bool.
        arguments: ``[N, K]`` signed real arguments.
        cutout_centers: ``[N, K, 2]`` uniform draws in [0, 1).
        options: fills and interpolation (its ``cutout_centers`` is replaced per slot).
        kinds_per_slot: the operation indices that can occur in each slot, if known
            (fewer passes; default: every kind in every slot).
        fixed_shapes: the strategy (see the module's docstring); default
            :func:`uses_fixed_shapes` of the images' device.
        warp_cache: where the grouped strategy keeps the warps it computes, for later batches
            (worth it when arguments repeat: a policy without magnitude noise).
    """
    if fixed_shapes is None:
        fixed_shapes = uses_fixed_shapes(images.device)
    slots = operations.shape[1]
    kinds_per_slot = [_ALL_KINDS] * slots if kinds_per_slot is None else list(kinds_per_slot)
    drawn = torch.where(applied, operations, -1)
    used_slots = [slot for slot, kinds in enumerate(kinds_per_slot) if any(index >= 0 for index in kinds)]
    if not fixed_shapes:
        return _apply_grouped(images, drawn, arguments, cutout_centers, options, used_slots, warp_cache)
    result = images
    for slot in used_slots:
        kinds = sorted(index for index in kinds_per_slot[slot] if index >= 0)
        slot_options = options._replace(cutout_centers=cutout_centers[:, slot])
        result = _apply_slot_fixed(result, drawn[:, slot], arguments[:, slot], kinds, slot_options)
    return result if result is not images else images.clone()


@functools.lru_cache(maxsize=32)
def compiled_apply_operations(configuration: Hashable) -> Callable[..., torch.Tensor]:
    """:func:`apply_operations` under ``torch.compile(fullgraph=True)`` (fixed shapes, one graph) for
    one configuration: everything the graph is specialised on (the caller's key: the policy's kinds,
    fills, interpolation, the batch's dtype, device and shape).

    Each configuration compiles its own copy of the function's code: dynamo keeps compiled graphs, and
    counts recompilations against its limit of 8, per code object, so one shared compiled function
    failed on the ninth configuration (``FailOnRecompileLimitHit``). The 32 most recently used are kept.
    """
    code = apply_operations.__code__.replace()  # a new code object, with its own compiled entries
    function = apply_operations
    copy = types.FunctionType(code, function.__globals__, function.__name__, function.__defaults__)
    return torch.compile(copy, fullgraph=True)


def _geometric_coefficients(
    operations: torch.Tensor, arguments: torch.Tensor, kinds: Sequence[int], height: int, width: int
) -> torch.Tensor:
    """``[N, 6]`` PIL affine coefficients of each image's geometric operation; the identity for the others."""
    identity = constant((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), torch.float64, operations.device)
    coefficients = identity.expand(len(operations), 6)
    for index in kinds:
        of_kind = OPERATIONS[OPERATION_NAMES[index]].affine_coefficients(arguments, height, width)
        coefficients = torch.where((operations == index).unsqueeze(1), of_kind, coefficients)
    return coefficients


def _apply_slot_fixed(
    images: torch.Tensor, operations: torch.Tensor, arguments: torch.Tensor, kinds: Sequence[int], options: TensorOptions
) -> torch.Tensor:
    """One slot with fixed shapes: every pass covers the whole batch, each image keeps its own operation's result.

    Each image changes in one pass at most, so every pass reads the slot's input.
    """
    per_image = (-1,) + (1,) * (images.ndim - 1)
    result = images
    geometric = [index for index in kinds if index in _GEOMETRIC]
    if geometric:
        coefficients = _geometric_coefficients(operations, arguments, geometric, *images.shape[-2:])
        warped = affine(images, coefficients, options)
        # nearest sampling with the identity reproduces every pixel exactly; other resamplings may not
        moved = torch.isin(operations, constant(geometric, torch.long, operations.device)).view(per_image)
        result = warped if options.interpolation == "nearest" else torch.where(moved, warped, images)
    tabled = [index for index in kinds if index in _COLOUR] if images.dtype == torch.uint8 else []
    if tabled:
        levels = torch.arange(256, device=images.device, dtype=torch.uint8)
        tables = levels.expand(*images.shape[:2], 256)
        for index in tabled:
            of_kind = colour_table(_KERNELS[index].levels_of, images, arguments)
            tables = torch.where((operations == index).view(-1, 1, 1), of_kind, tables)
        n, channels = images.shape[:2]
        result = tables.gather(2, result.reshape(n, channels, -1).long()).view_as(images)
    for index in kinds:
        if index in _GEOMETRIC or index in tabled:
            continue
        result = select((operations == index).view(per_image), _KERNELS[index](images, arguments, options), result)
    return result


class _SlotPlan(NamedTuple):
    """How the grouped strategy applies one slot: the rows reordered by kind, and their parameters."""

    reorder: torch.Tensor  # the previous rows' permutation that orders this slot's rows by kind
    counts: list[int]  # how many rows are untouched, then of each kind of ``_GROUPED_ORDER``
    arguments: torch.Tensor  # each row's argument
    cutout_centers: torch.Tensor  # each row's Cutout centre

    def runs(self) -> list[tuple[int, int, int]]:
        """``(kind, start, end)`` of each kind's run of rows, in ``_GROUPED_ORDER``."""
        bounds = list(itertools.accumulate(self.counts))  # each run's end
        return [(index, bounds[position], bounds[position + 1])
                for position, index in enumerate(_GROUPED_ORDER) if self.counts[position + 1]]


def _plan_slots(
    operations: torch.Tensor, arguments: torch.Tensor, cutout_centers: torch.Tensor, slots: Sequence[int]
) -> tuple[list[_SlotPlan], torch.Tensor | None]:
    """The plans of the slots that change any image, and the batch's index of each row after the last
    (None: no slot changes anything). The runs of every slot are counted with one read on the host."""
    positions_of = _GROUPED_POSITIONS.to(operations.device)
    order, reorders, orders, positions = None, [], [], []
    for slot in slots:
        slot_positions = positions_of.index_select(0, operations[:, slot] + 1)
        if order is not None:
            slot_positions = slot_positions.index_select(0, order)
        reorder = torch.argsort(slot_positions, stable=True)  # all untouched: the identity
        order = reorder if order is None else order.index_select(0, reorder)
        reorders.append(reorder)
        orders.append(order)
        positions.append(slot_positions + len(positions) * (len(_GROUPED_ORDER) + 1))
    if not positions:
        return [], None
    kinds = len(_GROUPED_ORDER) + 1
    counts = torch.bincount(torch.cat(positions), minlength=len(positions) * kinds).view(-1, kinds).tolist()
    plans = [
        _SlotPlan(reorder, slot_counts, arguments[:, slot].index_select(0, order),
                  cutout_centers[:, slot].index_select(0, order))
        for slot, reorder, order, slot_counts in zip(slots, reorders, orders, counts)
        if slot_counts[0] < operations.shape[0]
    ]
    return plans, order if plans else None


def _geometric_sources(
    plans: Sequence[_SlotPlan], height: int, width: int, warp_cache: WarpCache | None
) -> list[torch.Tensor | None]:
    """Per plan, the nearest-resampling sources of its geometric rows (None if it has none), for all
    slots together: from ``warp_cache`` if given (and they fit), else from one :func:`nearest_sources` call."""
    runs = [(plan, index, start, end) for plan in plans for index, start, end in plan.runs() if index in _GEOMETRIC]
    if not runs:
        return [None] * len(plans)
    sources = None
    if warp_cache is not None:
        kinds = [index for _, index, start, end in runs for _ in range(end - start)]
        arguments = torch.cat([plan.arguments[start:end] for plan, _, start, end in runs])
        sources = warp_cache.sources(kinds, arguments, height, width)
    if sources is None:
        runs_arguments = [(index, plan.arguments[start:end]) for plan, index, start, end in runs]
        sources = nearest_sources(runs_affine_coefficients(runs_arguments, height, width), height, width)
    sizes = [sum(end - start for run_plan, _, start, end in runs if run_plan is plan) for plan in plans]
    return [part if size else None for part, size in zip(sources.split(sizes), sizes)]


def _apply_grouped(
    images: torch.Tensor,
    operations: torch.Tensor,
    arguments: torch.Tensor,
    cutout_centers: torch.Tensor,
    options: TensorOptions,
    slots: Sequence[int],
    warp_cache: WarpCache | None,
) -> torch.Tensor:
    """The slots, each kind on the images that drew it: per slot one affine pass for all geometric
    kinds and, on uint8, one table gather for all colour kinds with a table.

    Per slot the images are ordered by kind, in ``_GROUPED_ORDER`` (one argsort and one gather),
    so that each kind's images are one run; the runs of all slots are counted with one read on
    the host, and with nearest resampling the geometric sources of all slots are computed
    together. The results are concatenated in that order; the batch's order is restored once,
    at the end.
    """
    plans, order = _plan_slots(operations, arguments, cutout_centers, slots)
    if order is None:
        return images.clone()
    height, width = images.shape[-2:]
    nearest = options.interpolation == "nearest"
    sources = _geometric_sources(plans, height, width, warp_cache) if nearest else [None] * len(plans)
    result = images
    for plan, slot_sources in zip(plans, sources):
        result = _apply_runs(result.index_select(0, plan.reorder), plan, slot_sources, options)
    return result.index_select(0, torch.argsort(order))


def _apply_runs(
    images: torch.Tensor, plan: _SlotPlan, sources: torch.Tensor | None, options: TensorOptions
) -> torch.Tensor:
    """Images ordered by kind as ``plan`` says, each run through its kind's operation (the geometric
    runs through ``sources``, if given)."""
    arguments, counts = plan.arguments, plan.counts
    runs = plan.runs()
    geometric = [run for run in runs if run[0] in _GEOMETRIC]
    tabled = [run for run in runs if run[0] in _TABLED] if images.dtype == torch.uint8 else []
    pieces = [images[: counts[0]]]
    if geometric:
        moved = images[geometric[0][1] : geometric[-1][2]]
        if sources is None:
            runs_arguments = [(index, arguments[start:end]) for index, start, end in geometric]
            pieces.append(affine(moved, runs_affine_coefficients(runs_arguments, *images.shape[-2:]), options))
        else:
            pieces.append(warp_nearest(moved, sources, options))
    if tabled:
        maps = [(_KERNELS[index].levels_of, images[start:end], arguments[start:end]) for index, start, end in tabled]
        pieces.append(lookup_levels(images[tabled[0][1] : tabled[-1][2]], maps))
    for index, start, end in runs[len(geometric) + len(tabled) :]:
        run_options = options._replace(cutout_centers=plan.cutout_centers[start:end])
        pieces.append(_KERNELS[index](images[start:end], arguments[start:end], run_options))
    return torch.cat(pieces)
