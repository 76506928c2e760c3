"""DADA presets on the Hugging Face Hub: loading ``hf-hub:org/name[@revision]`` and pushing presets.

A Hub preset is a model repository holding ``policy.json`` (the dada-policy JSON
format), optionally ``policy.safetensors`` (the search's learned tensors) and a
``README.md`` model card. Nothing downloaded is unpickled or evaluated: the JSON is
validated by :meth:`Policy.from_dict` and tensors are read with safetensors only.
Every failure is a ``ValueError`` naming the repository. When the Hub cannot be
reached and a file is not cached, loading fails after one request with a short
timeout (``HUB_TIMEOUT_S``), instead of huggingface_hub's retries.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    try_to_load_from_cache,
)
from huggingface_hub.utils import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load

from .files import MAX_PARAMETERS_FILE_BYTES, check_recorded_sha256, read_regular_file
from .model_card import model_card
from .policy import Policy
from .policy import read_policy_bytes
from .presets import HUB_PREFIX, expand_user, load_policy

POLICY_FILE = "policy.json"
PARAMETERS_FILE = "policy.safetensors"
CARD_FILE = "README.md"
# Network failures surface as the HTTP library's own errors: OSErrors with requests (older
# huggingface_hub), subclasses of HfHubHTTPError's base class with httpx.
_NETWORK_ERRORS = (OSError, HfHubHTTPError.__bases__[0])
_UNAVAILABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # what huggingface_hub would retry
HUB_TIMEOUT_S = 5.0
"""Seconds to wait for the Hub before saying it cannot be reached (``HF_HUB_ETAG_TIMEOUT`` overrides)."""
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


class MissingHubFileError(ValueError):
    """The Hub repository exists but has no such file."""


def check_repo_id(repo_id: Any) -> str:
    """Return ``repo_id`` if it is a Hub repository id ``org/name``; raise ValueError otherwise."""
    if (
        not isinstance(repo_id, str)
        or not _REPO_ID.fullmatch(repo_id)
        or "--" in repo_id
        or ".." in repo_id
        or repo_id.endswith((".", ".git"))
    ):
        raise ValueError(
            f"a Hub repository id must look like 'org/name' (letters, digits, '-', '_', '.'; "
            f"no '--' or '..'), got {repo_id!r}"
        )
    return repo_id


def parse_repo_spec(repo_spec: str) -> tuple[str, str | None]:
    """Split ``org/name[@revision]`` into the repository id and the revision (None: the default branch)."""
    if not isinstance(repo_spec, str):
        raise ValueError(f"a Hub preset must be 'org/name' or 'org/name@revision', got {repo_spec!r}")
    repo_id, at, revision = repo_spec.partition("@")
    if at and not revision:
        raise ValueError(f"empty revision after '@' in Hub preset {repo_spec!r}")
    return check_repo_id(repo_id), revision or None


def _describe(repo_id: str, revision: str | None) -> str:
    return f"Hub repository {repo_id!r}" + (f" at revision {revision!r}" if revision else "")


def _probe_timeout() -> float:
    if constants.HF_HUB_ETAG_TIMEOUT != constants.DEFAULT_ETAG_TIMEOUT:
        return float(constants.HF_HUB_ETAG_TIMEOUT)
    return HUB_TIMEOUT_S


def _check_reachable(repo_id: str, revision: str | None, filename: str) -> None:
    """One request for the file's metadata, short timeout, no retry: a clear error at once if the Hub is unreachable.

    Answers such as "no such repository" are left to ``hf_hub_download``, which reports them.
    """
    url = hf_hub_url(repo_id, filename, revision=revision)
    try:
        get_hf_file_metadata(url, timeout=_probe_timeout(), library_name="dada-transforms")
        return
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status not in _UNAVAILABLE_STATUS:
            return
        reason = f"HTTP {status}"
    except _NETWORK_ERRORS as error:
        reason = str(error) or type(error).__name__
    raise _unreachable(repo_id, revision, filename, reason)


def _unreachable(repo_id: str, revision: str | None, filename: str, reason: str) -> ValueError:
    return ValueError(
        f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({reason}), and {filename} of "
        f"{_describe(repo_id, revision)} is not cached (cache: {constants.HF_HUB_CACHE}). To work offline, "
        f"download it once with network access (`hf download {repo_id}`), then set HF_HUB_OFFLINE=1"
    )


def _download(repo_id: str, revision: str | None, filename: str) -> str:
    """The local path of ``filename`` from the Hub cache (downloading it when online); clear errors."""
    where = _describe(repo_id, revision)
    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if not constants.HF_HUB_OFFLINE and cached is None:
        _check_reachable(repo_id, revision, filename)
    try:
        return hf_hub_download(repo_id, filename, revision=revision, library_name="dada-transforms")
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise ValueError(
                f"{filename} of {where} is not cached and HF_HUB_OFFLINE=1 forbids downloading it "
                f"(cache: {constants.HF_HUB_CACHE}); load it once with network access "
                f"(e.g. `hf download {repo_id} {filename}`), or unset HF_HUB_OFFLINE"
            ) from None
        raise ValueError(
            f"cannot reach the Hugging Face Hub to download {filename} of {where}, and it is not cached "
            f"(cache: {constants.HF_HUB_CACHE}); check the network connection, or work offline: "
            f"download it once with network access (`hf download {repo_id}`), then set HF_HUB_OFFLINE=1"
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"{where}: revision {revision!r} does not exist") from None
    except RepositoryNotFoundError:
        raise ValueError(
            f"{where} does not exist, or is private or gated: check the name, or log in "
            f"(`hf auth login`, or set HF_TOKEN) if it is private"
        ) from None
    except EntryNotFoundError:
        raise MissingHubFileError(f"{where} has no {filename}: it is not a dada-transforms preset") from None
    except HfHubHTTPError as error:
        raise ValueError(f"downloading {filename} of {where} failed: {error}") from None
    except _NETWORK_ERRORS as error:  # errors huggingface_hub does not turn into a fallback to the cache
        if isinstance(cached, str):
            return cached
        raise _unreachable(repo_id, revision, filename, str(error) or type(error).__name__) from None


def load_hub_policy(repo_spec: str) -> Policy:
    """The policy in ``policy.json`` of the Hub repository ``org/name[@revision]`` (validated)."""
    repo_id, revision = parse_repo_spec(repo_spec)
    path = Path(_download(repo_id, revision, POLICY_FILE))
    try:
        return Policy.from_json_bytes(read_policy_bytes(path))
    except ValueError as error:
        raise ValueError(f"invalid {POLICY_FILE} in {_describe(repo_id, revision)}: {error}") from None


def _cached_as_absent(repo_id: str, revision: str | None, filename: str) -> bool:
    """True when the Hub cache records that ``filename`` is absent from the repository at that revision."""
    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    return cached is not None and not isinstance(cached, str)


def parameter_spec(epochs: int | None = None) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """The name, dtype and shape of every tensor ``dada-search`` saves (``PRESET.safetensors``).

    With ``epochs``, also the per-epoch ``history.*`` tensors, ``[epochs, ...]``.
    """
    from .search.augmentation import AugmentationParameters  # the search's own definitions of its tensors
    from .search.export import HISTORY_SHAPES

    spec = {name: (value.dtype, tuple(value.shape)) for name, value in AugmentationParameters().tensors().items()}
    if epochs is not None:
        spec.update({f"history.{key}": (torch.float32, (epochs, *shape)) for key, shape in HISTORY_SHAPES.items()})
    return spec


def check_parameters(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``tensors`` if they are what ``dada-search`` saves: the names, dtypes and shapes of
    :func:`parameter_spec` (the ``history.*`` tensors all or none), finite values, probabilities and
    magnitudes in [0, 1]; raise ValueError naming the first problem otherwise."""
    history = tensors.get("history.probabilities")
    spec = parameter_spec(history.shape[0] if history is not None and history.ndim > 0 else None)
    missing, unexpected = sorted(set(spec) - set(tensors)), sorted(set(tensors) - set(spec))
    if missing or unexpected:
        raise ValueError(f"the tensors are not a dada-search result: missing {missing}, unexpected {unexpected}")
    for name, (dtype, shape) in spec.items():
        value = tensors[name]
        if value.dtype != dtype or tuple(value.shape) != shape:
            raise ValueError(f"tensor {name!r} is {value.dtype} {list(value.shape)}, expected {dtype} {list(shape)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"tensor {name!r} has non-finite values")
        if name.endswith(("probabilities", "magnitudes")) and not ((value >= 0) & (value <= 1)).all():
            raise ValueError(f"tensor {name!r} has values outside [0, 1]")
    return tensors


def load_hub_parameters(repo_spec: str) -> dict[str, torch.Tensor] | None:
    """The tensors of ``policy.safetensors`` in the Hub repository (None if it has none); safetensors only.

    They must be the file that the repository's ``policy.json`` records (its SHA-256),
    and are checked against :func:`parameter_spec` (names, dtypes, shapes) and must be finite.
    """
    repo_id, revision = parse_repo_spec(repo_spec)
    if constants.HF_HUB_OFFLINE and _cached_as_absent(repo_id, revision, PARAMETERS_FILE):
        return None
    try:
        path = _download(repo_id, revision, PARAMETERS_FILE)
    except MissingHubFileError:
        return None
    where = _describe(repo_id, revision)
    policy = load_hub_policy(repo_spec)
    try:
        content = read_regular_file(path, MAX_PARAMETERS_FILE_BYTES, "parameters file")
        check_recorded_sha256(policy.metadata, content, f"{POLICY_FILE} of {where}", f"{PARAMETERS_FILE} of {where}")
        return check_parameters(load(content))
    except (SafetensorError, ValueError) as error:
        raise ValueError(f"invalid {PARAMETERS_FILE} in {where}: {error}") from None


def _read_parameters(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a safetensors file, after checking that safetensors reads them as a dada-search result."""
    data = read_regular_file(expand_user(path), MAX_PARAMETERS_FILE_BYTES, "parameters file")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as error:
        raise ValueError(f"parameters file {str(path)!r} is not a valid safetensors file: {error}") from None
    try:
        check_parameters(tensors)
    except ValueError as error:
        raise ValueError(f"parameters file {str(path)!r}: {error}") from None
    return data


def _as_policy(policy_or_path: Policy | str | os.PathLike[str]) -> Policy:
    if isinstance(policy_or_path, Policy):
        return policy_or_path
    if isinstance(policy_or_path, str) and policy_or_path.startswith(HUB_PREFIX):
        return load_hub_policy(policy_or_path[len(HUB_PREFIX) :])
    return load_policy(policy_or_path)


def push_preset(
    policy_or_path: Policy | str | os.PathLike[str],
    repo_id: str,
    *,
    safetensors_path: str | os.PathLike[str] | None = None,
    token: str | None = None,
    private: bool = False,
    api: HfApi | None = None,
) -> str:
    """Upload a preset to the Hub repository ``repo_id`` (created if needed) in one commit; returns its URL.

    The commit holds ``policy.json``, ``policy.safetensors`` (when ``safetensors_path``
    is given) and a generated ``README.md`` model card. ``policy_or_path`` is a
    :class:`Policy`, a preset name, a policy file or ``hf-hub:org/name``.
    """
    check_repo_id(repo_id)
    policy = _as_policy(policy_or_path)
    parameters = _read_parameters(safetensors_path) if safetensors_path is not None else None
    if parameters is not None:
        source = "the policy" if isinstance(policy_or_path, Policy) else repr(str(policy_or_path))
        check_recorded_sha256(policy.metadata, parameters, source, f"parameters file {str(safetensors_path)!r}")
    operations = [CommitOperationAdd(POLICY_FILE, policy.to_json().encode("utf-8"))]
    if parameters is not None:
        operations.append(CommitOperationAdd(PARAMETERS_FILE, parameters))
    card = model_card(policy, repo_id, has_parameters=parameters is not None)
    operations.append(CommitOperationAdd(CARD_FILE, card.encode("utf-8")))
    api = api if api is not None else HfApi(token=token, library_name="dada-transforms")
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        api.create_commit(
            repo_id,
            operations,
            commit_message=f"Upload DADA policy {policy.name or repo_id} with dada-transforms",
            token=token,
        )
    except OfflineModeIsEnabled:
        raise ValueError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE=1 is set; unset it to upload") from None
    except LocalTokenNotFoundError:
        raise ValueError(
            f"cannot push to {repo_id!r}: not logged in to the Hugging Face Hub; run `hf auth login`, "
            f"set HF_TOKEN or pass a token"
        ) from None
    except _NETWORK_ERRORS as error:
        raise ValueError(f"pushing to Hub repository {repo_id!r} failed: {error}") from None
    return str(url)
