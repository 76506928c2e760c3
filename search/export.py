"""Writing a search's result: ``PRESET.json`` (the policy) and ``PRESET.safetensors`` (all learned parameters)."""

from __future__ import annotations

import hashlib
import shlex
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save

from dada_transforms import __version__
from dada_transforms.atomic import write_bytes_atomic
from dada_transforms.policy import Policy

from .augmentation import AugmentationParameters
from .output_files import OutputPaths
from .settings import SearchInputError
from .space import SUB_POLICIES

PARAMETERS_FORMAT = "dada-search-parameters"
HISTORY_SHAPES = {"sub_policy_weights": (105,), "probabilities": (105, 2), "magnitudes": (105, 2)}
"""The published method's per-epoch snapshots (each method's: :attr:`.methods.SearchMethod.history_shapes`):
each history entry holds these as flat lists of floats; the result's safetensors holds them stacked as
``history.KEY`` tensors ``[epochs, *shape]``."""


def ranked_sub_policies(augmentation: AugmentationParameters, count: int) -> list[tuple[str, str, float]]:
    """The ``count`` sub-policies of highest weight, as ``(op, op, weight)``, heaviest first."""
    weights = augmentation.sub_policy_weights().detach().cpu()
    order = torch.argsort(weights, descending=True, stable=True)[:count]
    return [(*SUB_POLICIES[index], float(weights[index])) for index in order.tolist()]


def rounded_snapshot(values: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Each tensor flat, rounded to 6 significant digits: a history entry of any method."""
    return {key: [float(f"{v:.6g}") for v in value.detach().cpu().flatten().tolist()] for key, value in values.items()}


def epoch_snapshot(augmentation: AugmentationParameters) -> dict[str, list[float]]:
    """The sub-policy weights, probabilities and magnitudes now, flat, rounded to 6 significant digits."""
    with torch.no_grad():
        return rounded_snapshot({
            "sub_policy_weights": augmentation.sub_policy_weights(),
            "probabilities": augmentation.probabilities,
            "magnitudes": augmentation.magnitudes,
        })


def history_tensors(
    history: list[dict[str, Any]], shapes: dict[str, tuple[int, ...]] = HISTORY_SHAPES
) -> dict[str, torch.Tensor]:
    """The per-epoch snapshots ``shapes`` of ``history`` as float32 ``history.KEY`` tensors (none if an epoch lacks them)."""
    if not history or not all(key in entry for entry in history for key in shapes):
        return {}
    return {
        f"history.{key}": torch.tensor([entry[key] for entry in history], dtype=torch.float32).reshape(-1, *shape)
        for key, shape in shapes.items()
    }


def export_result(
    augmentation: torch.nn.Module,
    paths: OutputPaths,
    name: str,
    top_k: int,
    metadata: dict[str, Any],
    write: bool = True,
    weighted: bool = False,
    history_shapes: dict[str, tuple[int, ...]] = HISTORY_SHAPES,
) -> tuple[Policy, dict[str, torch.Tensor]]:
    """Write the top-``top_k`` policy and every learned tensor; returns both (``write=False``: only returns them).

    ``augmentation`` is a method's parameters (:attr:`.methods.MethodRun.parameters`):
    its ``to_policy(top_k, name, metadata, weighted)`` makes the policy, its ``tensors()`` the tensors.

    ``weighted``: the policy samples its sub-policies by their learned weights (see
    :meth:`AugmentationParameters.to_policy`) instead of uniformly.

    The policy's metadata holds ``metadata`` plus ``sub_policy_weights``, the
    weight softmax(alpha) of each exported sub-policy, in the file's order, and
    ``parameters``: the safetensors file's name and SHA-256. The safetensors is
    written first and the JSON last (each atomically), so a reader that checks
    the hash never takes a JSON and a safetensors of different searches as a pair.
    The per-epoch snapshots of ``metadata["history"]`` (``history_shapes``: the method's
    :attr:`.methods.SearchMethod.history_shapes`, by default the published method's, see
    :func:`epoch_snapshot`) go to the safetensors as ``history.*`` tensors; the JSON keeps the rest.

    Raises:
        SearchInputError: when a file cannot be written (the search's last checkpoint is then intact).
    """
    history = metadata.get("history", [])
    snapshots = history_tensors(history, history_shapes)
    metadata = {**metadata, "history": [{k: v for k, v in entry.items() if k not in history_shapes} for entry in history]}
    ranked = augmentation.to_policy(top_k=top_k, name=name, metadata=metadata, weighted=weighted)
    search = metadata.get("search", {})
    description = f"DADA policy searched by dada-search on {search.get('dataset')} with {search.get('model')}"
    tensors = {**augmentation.tensors(), **snapshots}
    file_metadata = {"format": PARAMETERS_FORMAT, "preset": name, "library": f"dada-transforms {__version__}"}
    content = save(tensors, metadata=file_metadata)
    parameters_file = {"file": paths.parameters.name, "sha256": hashlib.sha256(content).hexdigest()}
    policy = Policy(
        ranked.sub_policies, name=name, description=description, metadata={**ranked.metadata, "parameters": parameters_file},
        sampling_weights=ranked.sampling_weights,
    )
    if not write:
        return policy, tensors
    try:
        write_bytes_atomic(paths.parameters, content)
        policy.to_json(paths.policy)
    except (OSError, SafetensorError) as error:
        raise SearchInputError(
            f"cannot write the result to {str(paths.policy.parent)!r}: {getattr(error, 'strerror', None) or error}; "
            f"the checkpoint of the last epoch in {str(paths.checkpoint)!r} is intact: fix that and run the same "
            f"command with --resume to write the result again"
        ) from None
    return policy, tensors


def check_hub_repo(repo_id: str) -> None:
    """Check ``--push-to-hub``'s repository id as ``dada-transforms push`` does, before the search starts.

    Raises:
        SearchInputError: for an invalid id.
    """
    from dada_transforms.hub import check_repo_id

    try:
        check_repo_id(repo_id)
    except ValueError as error:
        raise SearchInputError(f"--push-to-hub: {error}") from None


def push_result(paths: OutputPaths, repo_id: str) -> None:
    """Upload the written result to the Hub repository ``repo_id``.

    Raises:
        SearchInputError: when the upload fails, saying that the result is on disk and how to push it later.
    """
    from dada_transforms.hub import push_preset

    try:
        push_preset(paths.policy, repo_id, safetensors_path=paths.parameters)
    except (ValueError, OSError) as error:
        raise SearchInputError(
            f"the search is done and its result is on disk ({str(paths.policy)!r} and {paths.parameters.name!r}), "
            f"but pushing it to {repo_id!r} failed: {error}; push it later with: "
            f"dada-transforms push {shlex.quote(str(paths.policy))} {repo_id}"
        ) from None
