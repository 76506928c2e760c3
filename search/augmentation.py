"""The learnable augmentation of the search: its parameters and how a draw augments a batch."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from dada_transforms.policy import Policy

from .distributed import SINGLE, Processes
from .drawn_operations import MAGNITUDE_GRADIENTS, AugmentedBatch, augmented_batch  # noqa: F401 (MAGNITUDE_GRADIENTS: re-exported)
from .relax import ControlVariate, DiscreteDraw, draw
from .space import OPERATIONS_IN_SLOT, SUB_POLICIES, SUB_POLICY_OPERATIONS


@dataclass(frozen=True)
class AugmentationDraw:
    """Everything random about one augmentation of N images."""

    discrete: DiscreteDraw  # D = 1 (one draw for the batch) or D = N (one per image)
    signs: torch.Tensor  # [N, 2] +1 / -1, the mirror signs
    operation_centers: torch.Tensor  # [N, 2, 2] centres for the Cutout operation

    def per_image(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N]`` sub-policy indices and ``[N, 2]`` application flags, broadcast from D = 1 if needed."""
        count = self.signs.shape[0]
        return self.discrete.sub_policy.expand(count), self.discrete.applied().expand(count, 2)


class AugmentationParameters(torch.nn.Module):
    """The search's parameters: sub-policy logits alpha, probabilities p, magnitudes m, and RELAX's phi.

    Args:
        temperature: tau of the Gumbel-Softmax and logistic relaxations (the paper: 0.5).
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        count = len(SUB_POLICIES)
        self.alpha = torch.nn.Parameter(torch.full((count,), 1e-3))
        self.probabilities = torch.nn.Parameter(torch.full((count, 2), 0.5))
        self.magnitudes = torch.nn.Parameter(torch.full((count, 2), 0.5))
        self.control_variate = ControlVariate(3 * count)
        # constant tables, as buffers so that they follow the module to its device (no per-step copies)
        self.register_buffer("operation_table", SUB_POLICY_OPERATIONS.clone(), persistent=False)

    def architecture_parameters(self) -> list[torch.nn.Parameter]:
        return [self.alpha, self.probabilities, self.magnitudes]

    def control_variate_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.control_variate.parameters())

    def sub_policy_weights(self) -> torch.Tensor:
        """``softmax(alpha)``, ``[105]``."""
        return self.alpha.softmax(0)

    def clamp_(self) -> None:
        """Keep probabilities and magnitudes in [0, 1] (called after every optimiser step)."""
        with torch.no_grad():
            self.probabilities.clamp_(0, 1)
            self.magnitudes.clamp_(0, 1)

    # -- drawing and augmenting -------------------------------------------------

    def sample(
        self, count: int, per_sample: bool, generator: torch.Generator | None = None, processes: Processes = SINGLE
    ) -> AugmentationDraw:
        """Draw the augmentation of ``count`` images: one sub-policy draw for all, or one per image.

        Under data parallelism ``count`` is this process's share of the global
        batch: the whole batch's draws come from ``generator`` (the same stream
        on every process), one sub-policy draw per process (per batch) or per
        image (per sample), and each process keeps its own part. A process's
        draws are thus independent of the others', and an image's per-sample
        draw does not depend on how many processes share the batch.
        """
        total = count * processes.world_size
        discrete = draw(self.alpha, self.probabilities, total if per_sample else processes.world_size, generator)
        uniform = torch.rand(total, 6, generator=generator, device=self.alpha.device)
        if processes.distributed:
            discrete = DiscreteDraw(*(processes.shard(getattr(discrete, field.name)) for field in fields(DiscreteDraw)))
            uniform = processes.shard(uniform)
        signs = torch.where(uniform[:, :2] < 0.5, -1.0, 1.0)
        return AugmentationDraw(discrete, signs, uniform[:, 2:].reshape(count, 2, 2))

    def augment(self, images: torch.Tensor, sample: AugmentationDraw, magnitude_grad: str) -> AugmentedBatch:
        """Apply a draw to uint8 images ``[N, C, H, W]`` (on the parameters' device).

        Values are computed exactly with the library's kernels (nearest resampling,
        PIL arithmetic). ``magnitude_grad`` says how the magnitudes get a gradient:
        ``"straight-through"`` (every applied operation adds ``m - stop_grad(m)`` to
        the model input) or ``"autodiff"`` (the affine operations and blends are
        recomputed in float with bilinear resampling to differentiate the output
        in m; the other operations fall back to straight-through).
        """
        sub_policy, applied = sample.per_image()
        return augmented_batch(
            images, self.operation_table[sub_policy], applied, self.magnitudes[sub_policy], sample.signs,
            sample.operation_centers, magnitude_grad, OPERATIONS_IN_SLOT,
        )

    # -- export and persistence -------------------------------------------------

    def to_policy(
        self, top_k: int = 25, name: str | None = None, metadata: dict | None = None, weighted: bool = False
    ) -> Policy:
        """The top-k sub-policies by weight, with p and m clamped to [0, 1], chosen uniformly (the paper's)
        or, ``weighted``, with their weights softmax(alpha) renormalised over the kept ones (ours)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(SUB_POLICIES):
            raise ValueError(f"top_k must be an integer in [1, {len(SUB_POLICIES)}], got {top_k!r}")
        with torch.no_grad():
            weights = self.sub_policy_weights().double().cpu()
            probabilities = self.probabilities.double().clamp(0, 1).cpu().tolist()
            magnitudes = self.magnitudes.double().clamp(0, 1).cpu().tolist()
        kept = weights.argsort(descending=True, stable=True)[:top_k].tolist()
        sub_policies = [
            [(op, probabilities[index][slot], magnitudes[index][slot]) for slot, op in enumerate(SUB_POLICIES[index])]
            for index in kept
        ]
        sampling_weights = None
        if weighted:  # softmax(alpha) renormalised over the kept ones = the softmax of their alphas, in float64
            sampling_weights = self.alpha.detach().double().cpu()[kept].softmax(0).tolist()
        policy = Policy.from_list(sub_policies, name=name, sampling_weights=sampling_weights)
        full_metadata: dict[str, Any] = dict(metadata or {})
        full_metadata["sub_policy_weights"] = [weights[index].item() for index in kept]
        return Policy(policy.sub_policies, name=name, metadata=full_metadata, sampling_weights=policy.sampling_weights)

    def tensors(self) -> dict[str, torch.Tensor]:
        """All parameters as contiguous CPU tensors (for safetensors)."""
        tensors = {
            "alpha": self.alpha,
            "probabilities": self.probabilities,
            "magnitudes": self.magnitudes,
            **{f"control_variate.{name}": value for name, value in self.control_variate.named_parameters()},
        }
        return {name: value.detach().cpu().clone().contiguous() for name, value in tensors.items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`tensors` returned (names and shapes are checked)."""
        expected = self.tensors()
        missing, unexpected = set(expected) - set(tensors), set(tensors) - set(expected)
        if missing or unexpected:
            raise ValueError(
                f"augmentation tensors do not match: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        for name, value in tensors.items():
            if tuple(value.shape) != tuple(expected[name].shape):
                raise ValueError(
                    f"augmentation tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(expected[name].shape)}"
                )
        targets = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                targets[name].copy_(value)

