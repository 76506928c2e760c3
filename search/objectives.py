"""Per-draw objective values of the search, shared by every method: losses to minimise.

- ``"unrolled"`` (the paper's): one virtual SGD step ``w' = w - xi * (g + momentum *
  buffer + wd * w)`` on the augmented batch, ``v = grad_w' L_val(w')`` on the clean
  validation batch, then per image the finite difference
  ``F = -(L_train(w+) - L_train(w-)) / (2 eps)``, ``w+- = w +- eps v``,
  ``eps = 0.01 / ||v||``: minus the estimate of ``(d^2 L_train / d x d w) . v``,
  low where training on the draw lowers the validation loss.
- ``"adversarial"`` (ours, after TeachAugment, Suzuki 2022): ``F = -(CE(w, x') - CE(teacher, x'))``
  with the teacher an exponential moving average of the network: low where the
  augmented image is hard for the network but still recognisable to the teacher.

Both give the values (detached) and the gradient of their mean in the tensors the
caller names (the searched magnitudes, through the augmented inputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .distributed import Processes, average_

_FINITE_DIFFERENCE_RADIUS = 0.01
TEACHER_DECAY = 0.999


def _float32_precision_settings() -> list[tuple[Any, str, Any]]:
    """``(owner, attribute, full-precision value)`` for every float32 convolution and matmul precision setting.

    torch >= 2.9 has per-backend, per-operator settings (``fp32_precision``); only
    those are read, since reading the legacy ``allow_tf32`` flags raises once a
    caller has mixed the two APIs. oneDNN (CPU) is included: ``medium`` matmul
    precision makes its float32 matmuls bfloat16.
    """
    backends = torch.backends
    if hasattr(backends.cudnn, "conv"):
        owners = [backends.cuda.matmul, backends.cudnn.conv]
        if hasattr(getattr(backends, "mkldnn", None), "matmul"):
            owners += [backends.mkldnn.matmul, backends.mkldnn.conv]
        return [(owner, "fp32_precision", "ieee") for owner in owners]
    return [(backends.cudnn, "allow_tf32", False), (backends.cuda.matmul, "allow_tf32", False)]


@contextmanager
def ieee_float32() -> Iterator[None]:
    """Full float32 convolutions and matmuls (no TF32, no bfloat16) for the finite difference.

    The perturbation ``eps * v`` moves each weight by far less than TF32's
    resolution (10 mantissa bits), so with TF32 the losses at ``w+`` and ``w-``
    would differ mostly by rounding. The caller's settings are restored on exit.
    """
    settings = _float32_precision_settings()
    saved = [getattr(owner, name) for owner, name, _ in settings]
    legacy_matmul = None if hasattr(torch.backends.cudnn, "conv") else torch.get_float32_matmul_precision()
    try:
        for owner, name, value in settings:
            setattr(owner, name, value)
        if legacy_matmul is not None:
            torch.set_float32_matmul_precision("highest")
        yield
    finally:
        for (owner, name, _), value in zip(settings, saved):
            setattr(owner, name, value)
        if legacy_matmul is not None:
            torch.set_float32_matmul_precision(legacy_matmul)


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The model's parameters that require grad, with their names."""
    return [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]


def unrolled_values(
    model: torch.nn.Module,
    weight_optimizer: torch.optim.SGD,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    val_inputs: torch.Tensor,
    val_labels: torch.Tensor,
    weight_gradients: list[torch.Tensor],
    wrt: list[torch.Tensor],
    *,
    scale_by_lr: bool = False,
    processes: Processes,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The unrolled objective ``F`` of each row of ``inputs`` (see the module notes) and ``d mean(F) / d wrt``.

    Args:
        model: the network (not its DistributedDataParallel wrapper); its
            BatchNorm statistics are left untouched (scratch copies).
        weight_optimizer: the network's SGD (its lr is ``xi``; momentum buffers and
            weight decay enter the virtual step).
        inputs: the augmented, normalised model inputs, with a graph to ``wrt``.
        val_inputs: the normalised validation batch.
        weight_gradients: ``grad_w L_train(w)`` on ``inputs`` (averaged over the processes).
        scale_by_lr: multiply ``F`` by xi, as DARTS does (the authors' code does not).
        processes: ``v`` is averaged over them.
    """
    parameters = trainable(model)
    names = [name for name, _ in parameters]
    weights = [parameter.detach() for _, parameter in parameters]
    group = weight_optimizer.param_groups[0]
    xi = group["lr"]
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}

    unrolled = _unrolled_weights(weight_optimizer, parameters, weight_gradients, xi, group["momentum"], group["weight_decay"])
    val_logits = functional_call(model, {**dict(zip(names, unrolled)), **buffers}, val_inputs)
    direction = torch.autograd.grad(F.cross_entropy(val_logits, val_labels), unrolled)
    average_(processes, list(direction))
    epsilon = _FINITE_DIFFERENCE_RADIUS / torch.linalg.vector_norm(
        torch.stack(torch._foreach_norm(direction))
    ).clamp_min(1e-12)

    def losses(sign: float) -> torch.Tensor:
        shifted = torch._foreach_add(weights, torch._foreach_mul(direction, epsilon * sign))
        logits = functional_call(model, {**dict(zip(names, shifted)), **buffers}, inputs)
        return F.cross_entropy(logits, labels, reduction="none")

    scale = -(xi if scale_by_lr else 1.0) / (2 * epsilon)
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    with ieee_float32():
        with torch.random.fork_rng(devices=devices):  # w+ and w- see the same dropout masks
            plus = losses(1.0)
        differences = (plus - losses(-1.0)) * scale
        gradients = torch.autograd.grad(differences.mean(), wrt)
    return differences.detach(), gradients


def _unrolled_weights(
    optimizer: torch.optim.SGD, parameters, gradients, xi: float, momentum: float, weight_decay: float
) -> list[torch.Tensor]:
    """``w - xi * (g + momentum * buffer + wd * w)``, as leaves that require grad."""
    with torch.no_grad():
        weights = [parameter.detach() for _, parameter in parameters]
        directions = torch._foreach_add(list(gradients), weights, alpha=weight_decay)
        state = optimizer.state
        pairs = [
            (direction, state[parameter]["momentum_buffer"])
            for direction, (_, parameter) in zip(directions, parameters)
            if state.get(parameter, {}).get("momentum_buffer") is not None
        ]
        if momentum and pairs:
            torch._foreach_add_([direction for direction, _ in pairs], [buffer for _, buffer in pairs], alpha=momentum)
        unrolled = torch._foreach_add(weights, directions, alpha=-xi)
    return [weight.requires_grad_() for weight in unrolled]


class Teacher:
    """An exponential moving average of a network's trainable parameters (decay :data:`TEACHER_DECAY`).

    It starts as the network; :meth:`update` after each SGD step. Its forward
    pass uses the network's module with the averaged parameters and scratch
    copies of the network's buffers (BatchNorm in training mode, its running
    statistics untouched), so it costs no second module.
    """

    def __init__(self, model: torch.nn.Module, decay: float = TEACHER_DECAY) -> None:
        self.model = model
        self.decay = float(decay)
        self.parameters = {name: parameter.detach().clone() for name, parameter in trainable(model)}

    def update(self) -> None:
        """Move the average toward the network's current parameters."""
        with torch.no_grad():
            current = dict(trainable(self.model))
            averaged = list(self.parameters.values())
            torch._foreach_lerp_(averaged, [current[name].detach() for name in self.parameters], 1 - self.decay)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's logits (differentiable in ``inputs``)."""
        buffers = {name: buffer.clone() for name, buffer in self.model.named_buffers()}
        return functional_call(self.model, {**self.parameters, **buffers}, inputs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in self.parameters.items()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (names and shapes are checked)."""
        if not isinstance(state, dict) or set(state) != set(self.parameters) or any(
            not isinstance(state[name], torch.Tensor) or state[name].shape != value.shape
            for name, value in self.parameters.items()
        ):
            raise ValueError(f"the teacher's state must hold the tensors {sorted(self.parameters)}, got {state!r:.200}")
        with torch.no_grad():
            for name, value in self.parameters.items():
                value.copy_(state[name])


def adversarial_values(
    logits: torch.Tensor, teacher: Teacher, inputs: torch.Tensor, labels: torch.Tensor, wrt: list[torch.Tensor]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``F = -(CE(network) - CE(teacher))`` per row of ``inputs`` and ``d mean(F) / d wrt``.

    ``logits``: the network's on ``inputs`` (the step's training forward pass, whose
    graph is kept for the caller's backward).
    """
    values = F.cross_entropy(teacher.logits(inputs), labels, reduction="none") - F.cross_entropy(
        logits, labels, reduction="none"
    )
    gradients = torch.autograd.grad(values.mean(), wrt, retain_graph=True)
    return values.detach(), gradients
