"""The compact search (ours): K draws per image, a leave-one-out baseline, autodiff magnitudes.

One step on a batch of n images (each process's share under torchrun):

1. every image is repeated K times, each copy with its own draw of the compact
   space (:class:`.compact.CompactAugmentation`): a batch of n K augmented images;
2. the network's forward pass on that batch gives the training loss (the SGD step
   on w, at the end, uses all n K draws: every draw that is scored is also trained
   on, so the objective measures the training that happens);
3. each draw's value ``F`` (a loss to minimise) from the objective (:mod:`.objectives`:
   ``"unrolled"``, the paper's one-step finite difference, or ``"adversarial"``);
4. the logits and the probability by the score function with a **leave-one-out
   baseline**: draw k of image i is compared with the mean value of the image's
   other K - 1 draws, which never sees draw k itself (unbiased), and removes what
   the image alone decides (easy or hard, whatever the augmentation);
   magnitudes by autodiff through the differentiable operations, straight-through
   for the others; Adam, clamp;
5. SGD on w (gradient clipped); with the adversarial objective, the teacher's moving average.

Data-parallel as :class:`.bilevel.BilevelSearchStep`: the global batch's draws come
from the shared generator, each process keeping its images' rows; w trains through
DistributedDataParallel; the gradients of the searched parameters are averaged over
the processes, which keeps them bit-identical everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .bilevel import AugmentedTrainingStep, StepStats, training_options
from .compact import OPERATION_COUNT, CompactAugmentation, CompactDraw
from .compact_floor import (
    CompactNoiseFloor,
    compact_null_pass_floor,
)
from .distributed import SINGLE, Processes
from .export import rounded_snapshot
from .noise_band import outside_line
from .objectives import TEACHER_DECAY, Teacher, adversarial_values, unrolled_values
from .settings import OBJECTIVES, SearchSettings


class CompactSearchStep(AugmentedTrainingStep):
    """Runs compact search steps (see the module notes).

    Args (besides :class:`.bilevel.AugmentedTrainingStep`'s; Adam updates logits, probability, magnitudes):
        parameters: the compact space's parameters (on the model's device).
        draws: K >= 2, the draws per image (the leave-one-out baseline needs two).
        objective: one of :data:`.settings.OBJECTIVES`.
        hypergradient_xi: the unrolled objective times xi (as DARTS; default False).
        teacher_decay: the adversarial objective's teacher: its moving average's decay.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        parameters: CompactAugmentation,
        *,
        draws: int = 4,
        objective: str = "unrolled",
        hypergradient_xi: bool = False,
        teacher_decay: float = TEACHER_DECAY,
        lr: float,
        weight_decay: float,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        processes: Processes = SINGLE,
        **training: Any,
    ) -> None:
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
            raise ValueError(f"draws must be an integer >= 2 (the leave-one-out baseline needs two), got {draws!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if not 0 < teacher_decay < 1:
            raise ValueError(f"teacher_decay must be in (0, 1), got {teacher_decay!r}")
        super().__init__(
            model, parameters.architecture_parameters(), lr=lr, weight_decay=weight_decay, mean=mean, std=std,
            processes=processes, **training,
        )
        self.parameters = parameters
        self.draws = draws
        self.objective = objective
        self.hypergradient_xi = bool(hypergradient_xi)
        self.teacher = Teacher(model, teacher_decay) if objective == "adversarial" else None

    def step(
        self,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        val_images: torch.Tensor,
        val_labels: torch.Tensor,
    ) -> StepStats:
        """One compact step on uint8 batches ``[n, C, H, W]`` (already cropped and flipped).

        ``values`` of the result: ``F`` of each of this process's ``n K`` draws.
        """
        self._check_inputs(train_images, train_labels, val_images, val_labels)
        sample = self.parameters.sample(train_images.shape[0], self.draws, self.generator, self.processes)
        inputs = self._model_inputs(self.parameters.augment(train_images, sample, "autodiff"))
        labels = train_labels.repeat_interleave(self.draws)
        magnitudes = [self.parameters.magnitudes]
        self.weight_optimizer.zero_grad(set_to_none=True)
        adversarial = self.teacher is not None
        logits = self._trained_model(inputs if adversarial else inputs.detach())
        loss = F.cross_entropy(logits, labels)
        if adversarial:
            values, (magnitude_gradient,) = adversarial_values(logits, self.teacher, inputs, labels, magnitudes)
            loss.backward(inputs=[parameter for _, parameter in self._trainable()])
        else:
            loss.backward()  # under DistributedDataParallel: the gradient averaged over the processes
            weight_gradients = [parameter.grad for _, parameter in self._trainable()]
            values, (magnitude_gradient,) = unrolled_values(
                self.model, self.weight_optimizer, inputs, labels, self._normalized(val_images), val_labels,
                weight_gradients, magnitudes, scale_by_lr=self.hypergradient_xi, processes=self.processes,
            )
        self.policy_step(values, sample, magnitude_gradient)
        self._weight_step()
        if adversarial:
            self.teacher.update()
        accuracy = (logits.detach().argmax(1) == labels).float().mean()
        return StepStats(loss.detach(), accuracy, values)

    def policy_gradients(self, values: torch.Tensor, sample: CompactDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """The leave-one-out score-function estimates of ``d E[F] / d logits`` ``[15]`` and ``d E[F] / d p`` ``[]``.

        ``mean over rows of (F_ik - mean_{j != k} F_ij) * d log P(draw_ik)``, over this
        process's rows (the caller averages over the processes).
        """
        if values.shape != (sample.count,):
            raise ValueError(f"expected one value per draw, shape ({sample.count},), got {tuple(values.shape)}")
        per_image = values.detach().view(-1, sample.draws)
        others = (per_image.sum(1, keepdim=True) - per_image) / (sample.draws - 1)
        weights = (per_image - others).flatten() / sample.count
        logits_score, probability_score = self.parameters.score(sample)
        weights = weights.to(logits_score.dtype)
        return weights @ logits_score, weights @ probability_score

    def policy_step(self, values: torch.Tensor, sample: CompactDraw, magnitudes: torch.Tensor) -> None:
        """Adam on (logits, p, m) from the draws' values and the magnitudes' gradient ``[15]``, then the clamp.

        Every gradient is averaged over the processes first (one collective). The
        null pass of :mod:`.compact_floor` drives this with values that say nothing about the draw.
        """
        parameters = self.parameters
        parameters.logits.grad, parameters.probability.grad = self.policy_gradients(values, sample)
        parameters.magnitudes.grad = magnitudes
        self._searched_step()
        parameters.clamp_()

    # -- resume ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Both optimisers' states and the teacher's parameters (None without the adversarial objective)."""
        return {
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        keys = {"weight_optimizer", "arch_optimizer", "teacher"}
        if not isinstance(state, dict) or set(state) != keys or (state["teacher"] is None) != (self.teacher is None):
            raise ValueError(f"expected a dict with {sorted(keys)} (teacher: {self.objective} objective), got {state!r:.200}")
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])


@dataclass
class CompactRun:
    """The compact method set up for one search (the :class:`.methods.MethodRun` interface)."""

    parameters: CompactAugmentation
    step: CompactSearchStep
    settings: SearchSettings
    processes: Processes

    def snapshot(self) -> dict[str, list[float]]:
        """The operation weights, the probability and the operation magnitudes now, rounded to 6 significant digits."""
        with torch.no_grad():
            return rounded_snapshot({
                "operation_weights": self.parameters.operation_weights(),
                "probability": self.parameters.probability,
                "operation_magnitudes": self.parameters.magnitudes,
            })

    def summary(self, count: int) -> str:
        """``top: Op weight (m magnitude), ...; p probability``: the ``count`` heaviest operations."""
        from dada_transforms.ops import OPERATION_NAMES

        with torch.no_grad():
            weights = self.parameters.operation_weights().cpu()
            magnitudes = self.parameters.magnitudes.detach().cpu()
            probability = self.parameters.probability.item()
        order = weights.argsort(descending=True, stable=True)[:count].tolist()
        top = ", ".join(f"{OPERATION_NAMES[index]} {weights[index]:.4f} (m {magnitudes[index]:.3f})" for index in order)
        return f"top: {top}; p {probability:.3f}"

    def noise_floor(self, objective: list[list[float]], batch_sizes: list[int]) -> CompactNoiseFloor:
        """:func:`.compact_floor.compact_null_pass_floor` with this search's draws, operations, arch lr and seed."""
        settings = self.settings
        return compact_null_pass_floor(
            objective, batch_sizes, draws=settings.draws, operations=settings.operations, arch_lr=settings.arch_lr,
            seed=settings.seed,
        )

    def outside(self, floor: CompactNoiseFloor) -> dict[str, int]:
        """Operation weights, the probability and magnitudes outside the floor's bands."""
        with torch.no_grad():
            return floor.outside(self.parameters.operation_weights(), self.parameters.probability, self.parameters.magnitudes)

    def outside_line(self, counts: dict[str, int]) -> str:
        """:func:`.noise_band.outside_line` of the compact method."""
        return outside_line(counts, "compact")


class CompactMethod:
    """The compact search (ours); reads ``draws``, ``operations``, ``objective`` and the network's settings.

    Magnitudes always get autodiff gradients (``magnitude_grad`` is the published
    method's); ``sampling``, ``estimator`` and ``temperature`` are the published method's too.
    """

    name = "compact"
    history_shapes = {"operation_weights": (OPERATION_COUNT,), "probability": (1,), "operation_magnitudes": (OPERATION_COUNT,)}

    def build(
        self,
        settings: SearchSettings,
        network: torch.nn.Module,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        generator: torch.Generator,
        processes: Processes,
    ) -> CompactRun:
        """The compact parameters on ``network``'s device and the step that trains both."""
        device = next(network.parameters()).device
        parameters = CompactAugmentation(settings.operations).to(device)
        step = CompactSearchStep(
            network,
            parameters,
            draws=settings.draws,
            objective=settings.objective,
            hypergradient_xi=settings.hypergradient_xi,
            **training_options(settings, mean=mean, std=std, generator=generator, processes=processes),
        )
        return CompactRun(parameters, step, settings, processes)
