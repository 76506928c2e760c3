"""Writing a search's result: ``PRESET.json`` (the policy) and ``PRESET.safetensors`` (all learned parameters)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from dada_transforms import __version__
from dada_transforms.atomic import write_atomic
from dada_transforms.policy import Policy

from .augmentation import AugmentationParameters
from .settings import SearchInputError
from .space import SUB_POLICIES

PARAMETERS_FORMAT = "dada-search-parameters"
_PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class OutputPaths:
    """The files a search writes."""

    policy: Path  # OUTPUT/PRESET.json
    parameters: Path  # OUTPUT/PRESET.safetensors


def output_paths(output: Path, name: str) -> OutputPaths:
    """The result files of preset ``name`` in folder ``output``.

    Raises:
        SearchInputError: for a name that cannot be a file name (or ends in .json).
    """
    if not isinstance(name, str) or not _PRESET_NAME.fullmatch(name) or name.endswith(".json"):
        raise SearchInputError(
            f"preset name must be letters, digits, '.', '_' or '-' (starting with a letter or digit, "
            f"no .json suffix), got {name!r}"
        )
    return OutputPaths(Path(output) / f"{name}.json", Path(output) / f"{name}.safetensors")


def ranked_sub_policies(augmentation: AugmentationParameters, count: int) -> list[tuple[str, str, float]]:
    """The ``count`` sub-policies of highest weight, as ``(op, op, weight)``, heaviest first."""
    weights = augmentation.sub_policy_weights().detach().cpu()
    order = torch.argsort(weights, descending=True, stable=True)[:count]
    return [(*SUB_POLICIES[index], float(weights[index])) for index in order.tolist()]


def export_result(
    augmentation: AugmentationParameters, paths: OutputPaths, name: str, top_k: int, metadata: dict[str, Any]
) -> tuple[Policy, dict[str, torch.Tensor]]:
    """Write the top-``top_k`` policy and every learned tensor; returns both.

    The policy's metadata holds ``metadata`` plus ``sub_policy_weights``, the
    weight softmax(alpha) of each exported sub-policy, in the file's order.
    """
    ranked = augmentation.to_policy(top_k=top_k, name=name, metadata=metadata)
    search = metadata.get("search", {})
    description = f"DADA policy searched by dada-search on {search.get('dataset')} with {search.get('model')}"
    policy = Policy(ranked.sub_policies, name=name, description=description, metadata=ranked.metadata)
    tensors = augmentation.tensors()
    file_metadata = {"format": PARAMETERS_FORMAT, "preset": name, "library": f"dada-transforms {__version__}"}
    write_atomic(paths.parameters, lambda path: save_file(tensors, str(path), metadata=file_metadata))
    policy.to_json(paths.policy)
    return policy, tensors
