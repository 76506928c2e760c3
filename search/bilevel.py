"""One DADA search step: sample, unrolled hypergradient of (alpha, p, m), RELAX, then the SGD step on w.

The unrolled (DARTS-style) update, with ``xi`` the current learning rate:

1. ``w' = w - xi * (grad_w L_train(w) + momentum * buffer + wd * w)`` on the augmented batch;
2. ``v = grad_w' L_val(w')`` on the validation batch (no augmentation);
3. ``eps = 0.01 / ||v||``, ``w+- = w +- eps * v``;
4. per image, ``F = -(L_train(w+) - L_train(w-)) / (2 eps)`` (times xi if asked), the
   finite-difference estimate of ``-(d^2 L_train / d theta d w) . v``; its gradient
   in m comes by autograd (straight-through or autodiff augmentation), its gradient in
   (alpha, p) by a score-function estimator with ``F`` as the black-box objective
   (``estimator``: a baseline, RELAX's trained control variate, or none; see :mod:`.relax`);
   steps 1-4 are :func:`.objectives.unrolled_values`, shared with the compact method;
5. Adam on (alpha, p, m) (and on phi, minimising the mean squared RELAX estimate, with ``"relax"``);
6. SGD on w with the augmented batch (gradient clipped).

Data-parallel (``processes``, under torchrun): each process holds its equal
share of every batch; w trains through ``DistributedDataParallel`` (its
gradient, hence ``w'``, is the global batch's), ``v`` and the gradients of
(alpha, p, m) and phi are averaged over the processes with collectives, the
running baseline is updated from every process's values, and every random draw is
made for the whole batch from the shared generator, each process keeping its
part (see :meth:`AugmentationParameters.sample`). The parameters stay
bit-identical on every process.

``w'``, ``w+`` and ``w-`` are evaluated with ``torch.func.functional_call`` on the
same module; BatchNorm running statistics are updated on scratch copies in those
evaluations, so only the real forward pass at ``w`` (step 6) updates the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .augmentation import AugmentationDraw, AugmentationParameters
from .batches import color_jitter, draw_color_jitter, draw_lighting, lighting
from .device_checks import indexed_device
from .distributed import SINGLE, Processes, average_, gather
from .drawn_operations import MAGNITUDE_GRADIENTS, AugmentedBatch
from .objectives import trainable, unrolled_values
from .relax import (
    GradientEstimate,
    RunningBaseline,
    baseline_gradients,
    relax_gradients,
    score_function_gradients,
)
from .settings import ESTIMATORS, SearchSettings

SAMPLINGS = ("per-batch", "per-sample")


@dataclass
class StepStats:
    """Training loss and accuracy of the augmented batch, as 0-dim tensors on the model's device.

    ``values``: the objective ``F`` of each of this process's draws (``[1]`` per
    batch, ``[N]`` per sample), None without the unrolled step.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    values: torch.Tensor | None = None


def _positive(value: Any, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 if allow_zero else value > 0):
        raise ValueError(f"{name} must be a number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def training_options(
    settings: SearchSettings, *, mean: tuple[float, ...], std: tuple[float, ...], generator: torch.Generator, processes: Processes
) -> dict[str, Any]:
    """The keyword arguments of every method's step that come from the settings and the data: the network's SGD,
    Cutout, normalisation, lighting (after the policy; ColorJitter comes before it, in the loop), the draws' generator."""
    return {
        "lr": settings.lr,
        "momentum": settings.momentum,
        "weight_decay": settings.weight_decay,
        "arch_lr": settings.arch_lr,
        "grad_clip": settings.grad_clip,
        "cutout": settings.cutout,
        "mean": mean,
        "std": std,
        "lighting": settings.lighting,
        "generator": generator,
        "processes": processes,
    }


class AugmentedTrainingStep:
    """The network's side of a search step, shared by every method: inputs, SGD on w, Adam on the searched parameters.

    Args:
        model: the classifier whose weights w are trained; it is put in train mode.
        searched: the parameters that Adam updates (the method's; on the model's device).
        lr, momentum, weight_decay: SGD on w; ``lr`` is read back from
            ``weight_optimizer.param_groups[0]["lr"]`` at every step (set it with a scheduler).
        arch_lr, arch_betas: Adam on ``searched``, without weight decay.
        grad_clip: max gradient norm of the SGD step on w.
        cutout: side in pixels of the Cutout applied after the policy (0 = off).
        mean, std: normalisation applied after augmentation.
        color_jitter: ColorJitter(b, c, s) strength applied after the policy (0 = off).
            That is the order of the authors' *training* pipeline; their ImageNet
            search jitters before the policy, which ``dada-search`` does outside
            the step (:func:`.batches.color_jittered`) and leaves this at 0.
        lighting: standard deviation of AlexNet-style PCA lighting noise after
            the policy (0 = off; the published ImageNet search: 0.1).
        generator: RNG for the augmentation draws (on the model's device); under
            data parallelism, seeded alike on every process.
        processes: the processes sharing each batch (:data:`SINGLE` outside
            torchrun; else the default process group must be initialised); w then
            trains through ``DistributedDataParallel``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        searched: list[torch.nn.Parameter],
        *,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float,
        arch_lr: float = 0.005,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        grad_clip: float = 5.0,
        cutout: int = 16,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        color_jitter: float = 0.0,
        lighting: float = 0.0,
        generator: torch.Generator | None = None,
        processes: Processes = SINGLE,
    ) -> None:
        if isinstance(cutout, bool) or not isinstance(cutout, int) or cutout < 0:
            raise ValueError(f"cutout must be an integer >= 0, got {cutout!r}")
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need one value per channel, got {mean!r} and {std!r}")
        for value in std:
            _positive(value, "every std")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
        self.model = model
        self.grad_clip = _positive(grad_clip, "grad_clip")
        self.cutout = cutout
        self.color_jitter = _positive(color_jitter, "color_jitter", allow_zero=True)
        self.lighting = _positive(lighting, "lighting", allow_zero=True)
        self.generator = generator
        self.processes = processes
        self._trained_model = model
        if processes.distributed:
            on_cuda = next(model.parameters()).device.type == "cuda"
            self._trained_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[torch.cuda.current_device()] if on_cuda else None
            )
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.weight_optimizer = torch.optim.SGD(
            model.parameters(),
            lr=_positive(lr, "lr"),
            momentum=_positive(momentum, "momentum", allow_zero=True),
            weight_decay=_positive(weight_decay, "weight_decay", allow_zero=True),
        )
        self.arch_optimizer = torch.optim.Adam(
            searched, lr=_positive(arch_lr, "arch_lr"), betas=tuple(arch_betas), weight_decay=0.0
        )

    def _check_inputs(self, train_images, train_labels, val_images, val_labels) -> None:
        """Check the batches and the generator's device; put the model in train mode."""
        self._check_batch(train_images, train_labels, "train")
        self._check_batch(val_images, val_labels, "val")
        if self.generator is not None and indexed_device(self.generator.device) != indexed_device(train_images.device):
            raise ValueError(f"generator is on {self.generator.device}, the images on {train_images.device}")
        self.model.train()

    def _trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return trainable(self.model)

    def _searched_step(self) -> None:
        """Adam on the searched parameters (and phi) with the gradients set on them, averaged over the processes
        first (one collective); gradients left unset (None) stay out."""
        searched = [parameter for group in self.arch_optimizer.param_groups for parameter in group["params"]]
        average_(self.processes, [parameter.grad for parameter in searched if parameter.grad is not None])
        self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)

    def _weight_step(self) -> None:
        """Clip w's gradient and take the SGD step."""
        torch.nn.utils.clip_grad_norm_([parameter for _, parameter in self._trainable()], self.grad_clip)
        self.weight_optimizer.step()
        self.weight_optimizer.zero_grad(set_to_none=True)

    # -- inputs ----------------------------------------------------------------------

    def _model_inputs(self, batch: AugmentedBatch) -> torch.Tensor:
        """ColorJitter and lighting if asked, normalise, Cutout (zero after normalisation, as DARTS/DADA do), straight-through."""
        images = batch.images
        processes, total = self.processes, images.shape[0] * self.processes.world_size
        if self.color_jitter:
            factors, order = draw_color_jitter(total, self.color_jitter, self.generator, images.device)
            images = color_jitter(images, processes.shard(factors), processes.shard(order))
        if self.lighting:
            images = lighting(images, processes.shard(draw_lighting(total, self.lighting, self.generator, images.device)))
        inputs = self._normalized_float(images)
        if self.cutout:
            inputs = inputs * self._cutout_mask(inputs)
        return inputs + batch.straight_through.to(inputs.dtype).view(-1, 1, 1, 1)

    def _normalized(self, images: torch.Tensor) -> torch.Tensor:
        return self._normalized_float(images.float().div_(255))

    def _normalized_float(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != self._mean.shape[1]:
            raise ValueError(f"mean/std have {self._mean.shape[1]} channels, the images {images.shape[1]}")
        if self._mean.device != images.device:
            self._mean, self._std = self._mean.to(images.device), self._std.to(images.device)
        mean, std = self._mean, self._std
        return ((images - mean) / std).to(self._dtype())

    def _cutout_mask(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 1, H, W]``: 0 inside a ``cutout`` square at a uniform pixel centre, clipped at the border."""
        count, _, height, width = images.shape
        total = count * self.processes.world_size  # drawn for the whole batch, this process's part kept
        centres = self.processes.shard(torch.rand(total, 2, 1, generator=self.generator, device=images.device))
        centre_y = (centres[:, 0] * height).floor()
        centre_x = (centres[:, 1] * width).floor()
        half = self.cutout // 2
        ys = torch.arange(height, device=images.device).view(1, height, 1)
        xs = torch.arange(width, device=images.device).view(1, 1, width)
        inside_y = (ys >= (centre_y - half).view(-1, 1, 1)) & (ys < (centre_y + half).view(-1, 1, 1))
        inside_x = (xs >= (centre_x - half).view(-1, 1, 1)) & (xs < (centre_x + half).view(-1, 1, 1))
        return (~(inside_y & inside_x)).unsqueeze(1).to(images.dtype)

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @staticmethod
    def _check_batch(images: torch.Tensor, labels: torch.Tensor, what: str) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"{what}_images must be a uint8 tensor [N, C, H, W], got {getattr(images, 'dtype', images)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{what}_labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")


class BilevelSearchStep(AugmentedTrainingStep):
    """Runs DADA search steps on a model (see the module docstring for the algorithm).

    Args (besides :class:`AugmentedTrainingStep`'s; Adam updates (alpha, p, m, phi)):
        augmentation: the searched parameters (on the model's device).
        sampling: ``"per-batch"`` (the paper: one draw per step) or ``"per-sample"``
            (one draw per image; the RELAX estimate is averaged over the batch).
        magnitude_grad: ``"straight-through"`` (the paper) or ``"autodiff"``.
        hypergradient_xi: multiply the finite difference by xi as DARTS does
            (the authors' code does not; default False).
        estimator: the (alpha, p) gradient estimator: ``"baseline"`` (default),
            ``"relax"`` (the trained control variate) or ``"score-function"``
            (c = 0, the authors' effective estimator); see :mod:`.relax`.
        unrolled: False skips the hypergradient (first-order): the augmentation
            parameters then get no gradient at all and stay where they are.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        augmentation: AugmentationParameters,
        *,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float,
        arch_lr: float = 0.005,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        grad_clip: float = 5.0,
        cutout: int = 16,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        sampling: str = "per-batch",
        magnitude_grad: str = "straight-through",
        hypergradient_xi: bool = False,
        estimator: str = "baseline",
        color_jitter: float = 0.0,
        lighting: float = 0.0,
        unrolled: bool = True,
        generator: torch.Generator | None = None,
        processes: Processes = SINGLE,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if magnitude_grad not in MAGNITUDE_GRADIENTS:
            raise ValueError(f"magnitude_grad must be one of {MAGNITUDE_GRADIENTS}, got {magnitude_grad!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        super().__init__(
            model, augmentation.architecture_parameters() + augmentation.control_variate_parameters(), lr=lr,
            momentum=momentum, weight_decay=weight_decay, arch_lr=arch_lr, arch_betas=arch_betas, grad_clip=grad_clip,
            cutout=cutout, mean=mean, std=std, color_jitter=color_jitter, lighting=lighting, generator=generator,
            processes=processes,
        )
        self.augmentation = augmentation
        self.sampling = sampling
        self.magnitude_grad = magnitude_grad
        self.hypergradient_xi = bool(hypergradient_xi)
        self.estimator = estimator
        self.unrolled = bool(unrolled)
        self.running_baseline = RunningBaseline()  # the default estimator's baseline

    # -- the step -----------------------------------------------------------------

    def step(
        self,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        val_images: torch.Tensor,
        val_labels: torch.Tensor,
    ) -> StepStats:
        """One full DADA step on uint8 batches ``[N, C, H, W]`` (already cropped and flipped)."""
        sample, inputs = self._prepare(train_images, train_labels, val_images, val_labels)
        trainable = self._trainable()
        self.weight_optimizer.zero_grad(set_to_none=True)
        logits = self._trained_model(inputs.detach())
        loss = F.cross_entropy(logits, train_labels)
        loss.backward()  # under DistributedDataParallel: the gradient averaged over the processes
        weight_gradients = [parameter.grad for _, parameter in trainable]
        if self.unrolled:
            gradients = self._hypergradients(inputs, train_labels, val_images, val_labels, weight_gradients, sample)
            self._architecture_step(gradients)
        values = gradients["values"] if self.unrolled else None
        self._weight_step()
        accuracy = (logits.detach().argmax(1) == train_labels).float().mean()
        return StepStats(loss.detach(), accuracy, values)

    def architecture_gradients(
        self,
        train_images: torch.Tensor,
        train_labels: torch.Tensor,
        val_images: torch.Tensor,
        val_labels: torch.Tensor,
        sample: AugmentationDraw | None = None,
    ) -> dict[str, torch.Tensor]:
        """The unrolled hypergradient estimates for one draw (a fresh one if None), changing nothing.

        Returns ``alpha``, ``probabilities``, ``magnitudes`` (detached),
        ``variance_loss`` (RELAX's mean squared estimate, with a graph to phi;
        None for the other estimators) and ``values`` (the objective ``F`` of
        each draw). The model's BatchNorm statistics are left untouched.
        """
        sample, inputs = self._prepare(train_images, train_labels, val_images, val_labels, sample)
        trainable = self._trainable()
        buffers = {name: buffer.clone() for name, buffer in self.model.named_buffers()}
        parameters = {name: parameter for name, parameter in trainable}
        logits = functional_call(self.model, {**parameters, **buffers}, inputs.detach())
        weight_gradients = torch.autograd.grad(F.cross_entropy(logits, train_labels), list(parameters.values()))
        running = self.running_baseline.state_dict()
        try:
            return self._hypergradients(inputs, train_labels, val_images, val_labels, weight_gradients, sample)
        finally:
            self.running_baseline.load_state_dict(running)  # measuring leaves the baseline's history as it was

    def _prepare(self, train_images, train_labels, val_images, val_labels, sample=None):
        """Check the batches, draw (unless given) and build the augmented model input."""
        self._check_inputs(train_images, train_labels, val_images, val_labels)
        if sample is None:
            sample = self.augmentation.sample(
                train_images.shape[0], self.sampling == "per-sample", self.generator, self.processes
            )
        return sample, self._model_inputs(self.augmentation.augment(train_images, sample, self.magnitude_grad))

    def _hypergradients(self, inputs, train_labels, val_images, val_labels, weight_gradients, sample):
        values, (magnitudes,) = unrolled_values(
            self.model, self.weight_optimizer, inputs, train_labels, self._normalized(val_images), val_labels,
            weight_gradients, [self.augmentation.magnitudes], scale_by_lr=self.hypergradient_xi, processes=self.processes,
        )
        if self.sampling == "per-batch":
            values = values.mean().view(1)
        estimate = self._estimate(values, sample)
        return {
            "alpha": estimate.alpha,
            "probabilities": estimate.probabilities,
            "magnitudes": magnitudes,
            "variance_loss": estimate.variance_loss,
            "values": values,
        }

    def _estimate(self, values: torch.Tensor, sample: AugmentationDraw) -> GradientEstimate:
        """The (alpha, p) estimate of the configured estimator from the draws' objective values.

        The default estimator's baseline is :attr:`running_baseline`, read before
        this step's values join it; they join it whatever the estimator (so a
        search resumed with another estimator, or measured, sees the same
        statistics), gathered from every process, so that all hold the same state.
        """
        augmentation = self.augmentation
        alpha, probabilities, discrete = augmentation.alpha, augmentation.probabilities, sample.discrete
        baseline = self.running_baseline.value(values)  # from earlier steps only: fixed before this step's draws
        self.running_baseline.update(gather(self.processes, values))
        if self.estimator == "relax":
            return relax_gradients(
                values, alpha, probabilities, discrete, augmentation.control_variate, augmentation.temperature
            )
        if self.estimator == "score-function":
            return score_function_gradients(values, alpha, probabilities, discrete)
        return baseline_gradients(values, baseline.expand_as(values), alpha, probabilities, discrete)

    def policy_step(self, values: torch.Tensor, sample: AugmentationDraw, magnitudes: torch.Tensor) -> None:
        """The step's update of (alpha, p, m) (and phi) from given objective values and magnitude gradient.

        What :meth:`step` does after the hypergradient, with ``values`` (``F`` of
        each draw of ``sample``) and ``magnitudes`` (``[105, 2]``) supplied: the
        configured estimator, the running baseline, Adam and the clamp. The null
        pass of :mod:`.noise_floor` drives it with objective values that carry no
        information about the draw.
        """
        estimate = self._estimate(values, sample)
        self._architecture_step(
            {
                "alpha": estimate.alpha,
                "probabilities": estimate.probabilities,
                "magnitudes": magnitudes,
                "variance_loss": estimate.variance_loss,
            }
        )

    def _architecture_step(self, gradients: dict[str, torch.Tensor]) -> None:
        """Adam on (alpha, p, m) with the hypergradients and on phi with RELAX's variance loss.

        Under data parallelism every gradient is first averaged over the processes (one collective).
        """
        augmentation = self.augmentation
        if gradients["variance_loss"] is not None:
            control_parameters = augmentation.control_variate_parameters()
            control_gradients = torch.autograd.grad(gradients["variance_loss"], control_parameters)
            for parameter, gradient in zip(control_parameters, control_gradients):
                parameter.grad = gradient
        augmentation.alpha.grad = gradients["alpha"]
        augmentation.probabilities.grad = gradients["probabilities"]
        augmentation.magnitudes.grad = gradients["magnitudes"]
        self._searched_step()
        augmentation.clamp_()

    # -- resume ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Both optimisers' states and the running baseline's statistics (tensors and plain values)."""
        return {
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "running_baseline": self.running_baseline.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        keys = {"weight_optimizer", "arch_optimizer", "running_baseline"}
        if not isinstance(state, dict) or set(state) != keys:
            raise ValueError(f"expected a dict with {sorted(keys)}, got {state!r:.200}")
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.running_baseline.load_state_dict(state["running_baseline"])
