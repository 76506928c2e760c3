"""Search methods: what the search loop learns and how, behind one small interface.

The loop (:mod:`.loop`: data, devices, torchrun, checkpoints, resume, locks,
progress, history, export) knows a method only through :class:`SearchMethod`,
looked up by :func:`method_for` from ``settings.method``, and the
:class:`MethodRun` its ``build`` returns:

- ``published``: the paper's search (Li et al., ECCV 2020): 105 sub-policies of
  two operations, each with its probabilities and magnitudes, one bilevel step
  (:class:`.bilevel.BilevelSearchStep`) per batch.
- ``compact`` (ours, :mod:`.compact_step`): one weight and one magnitude per
  operation, several draws per image against a leave-one-out baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .augmentation import AugmentationParameters
from .bilevel import BilevelSearchStep, StepStats, training_options
from .distributed import Processes
from .export import HISTORY_SHAPES, epoch_snapshot, ranked_sub_policies
from .noise_band import outside_line
from .noise_floor import NoiseFloor, null_pass_floor
from .settings import SearchSettings


class SearchStep(Protocol):
    """One search step on a batch; the loop sets ``weight_optimizer``'s learning rate every epoch."""

    weight_optimizer: torch.optim.Optimizer
    arch_optimizer: torch.optim.Optimizer

    def step(
        self, train_images: torch.Tensor, train_labels: torch.Tensor, val_images: torch.Tensor, val_labels: torch.Tensor
    ) -> StepStats: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MethodRun(Protocol):
    """A method set up for one search: its parameters, its step and how it reports them."""

    parameters: torch.nn.Module  # has tensors(), load_tensors() and to_policy(top_k, name, metadata, weighted)
    step: SearchStep

    def snapshot(self) -> dict[str, list[float]]:
        """This epoch's entry in the history: flat lists of values in [0, 1]."""
        ...

    def summary(self, count: int) -> str:
        """The end of an epoch's log line (e.g. its ``count`` heaviest choices)."""
        ...

    def noise_floor(self, objective: list[list[float]], batch_sizes: list[int]) -> NoiseFloor:
        """The noise floor by a null pass, from each epoch's objective quantiles and one epoch's global batch sizes."""
        ...

    def outside(self, floor: NoiseFloor) -> dict[str, int]:
        """How many learned values lie outside ``floor``'s bands (the result's ``outside_noise_floor``)."""
        ...

    def outside_line(self, counts: dict[str, int]) -> str:
        """The one line that reports :meth:`outside`'s ``counts``."""
        ...


class SearchMethod(Protocol):
    """One entry of :data:`.settings.METHODS`."""

    name: str
    history_shapes: dict[str, tuple[int, ...]]  # the keys and shapes of MethodRun.snapshot(), flattened there

    def build(
        self,
        settings: SearchSettings,
        network: torch.nn.Module,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        generator: torch.Generator,
        processes: Processes,
    ) -> MethodRun: ...


@dataclass
class PublishedRun:
    """The paper's search: :class:`.augmentation.AugmentationParameters` and the bilevel step."""

    parameters: AugmentationParameters
    step: BilevelSearchStep
    settings: SearchSettings
    processes: Processes

    def snapshot(self) -> dict[str, list[float]]:
        """The sub-policy weights, probabilities and magnitudes (:func:`.export.epoch_snapshot`)."""
        return epoch_snapshot(self.parameters)

    def summary(self, count: int) -> str:
        """``top: A+B weight, ...``: the ``count`` heaviest sub-policies."""
        top = ", ".join(f"{a}+{b} {weight:.4f}" for a, b, weight in ranked_sub_policies(self.parameters, count))
        return f"top: {top}"

    def noise_floor(self, objective: list[list[float]], batch_sizes: list[int]) -> NoiseFloor:
        """:func:`.noise_floor.null_pass_floor` with a draw per image (per-sample) or per process (per-batch)."""
        per_sample = self.settings.sampling == "per-sample"
        return null_pass_floor(
            objective,
            batch_sizes if per_sample else [self.processes.world_size] * len(batch_sizes),
            estimator=self.settings.estimator,
            arch_lr=self.settings.arch_lr,
            temperature=self.settings.temperature,
            seed=self.settings.seed,
        )

    def outside(self, floor: NoiseFloor) -> dict[str, int]:
        """Sub-policy weights, probabilities and magnitudes outside the floor's bands."""
        with torch.no_grad():
            return floor.outside(
                self.parameters.sub_policy_weights(), self.parameters.probabilities, self.parameters.magnitudes
            )

    def outside_line(self, counts: dict[str, int]) -> str:
        """:func:`.noise_band.outside_line`."""
        return outside_line(counts)


class PublishedMethod:
    """The paper's search (every setting but ``draws``, ``operations`` and ``objective``)."""

    name = "published"
    history_shapes = HISTORY_SHAPES

    def build(
        self,
        settings: SearchSettings,
        network: torch.nn.Module,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        generator: torch.Generator,
        processes: Processes,
    ) -> PublishedRun:
        """The augmentation parameters on ``network``'s device and the bilevel step that trains both."""
        device = next(network.parameters()).device
        augmentation = AugmentationParameters(temperature=settings.temperature).to(device)
        step = BilevelSearchStep(
            network,
            augmentation,
            sampling=settings.sampling,
            magnitude_grad=settings.magnitude_grad,
            hypergradient_xi=settings.hypergradient_xi,
            estimator=settings.estimator,
            **training_options(settings, mean=mean, std=std, generator=generator, processes=processes),
        )
        return PublishedRun(augmentation, step, settings, processes)


def _compact() -> SearchMethod:
    from .compact_step import CompactMethod  # ours, in its own module

    return CompactMethod()


_METHODS: dict[str, Callable[[], SearchMethod]] = {"published": PublishedMethod, "compact": _compact}


def method_for(settings: SearchSettings) -> SearchMethod:
    """The method that ``settings.method`` names."""
    return _METHODS[settings.method]()
