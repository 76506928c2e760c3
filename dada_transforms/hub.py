"""DADA presets on the Hugging Face Hub: loading ``hf-hub:org/name[@revision]`` and pushing presets.

A Hub preset is a model repository holding ``policy.json`` (the dada-policy JSON
format), optionally ``policy.safetensors`` (the search's learned tensors) and a
``README.md`` model card. Nothing downloaded is unpickled or evaluated: the JSON is
validated by :meth:`Policy.from_dict` and tensors are read with safetensors only.
Every failure is a ``ValueError`` naming the repository.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download, try_to_load_from_cache
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
from safetensors.torch import load, load_file

from .model_card import model_card
from .policy import Policy
from .presets import HUB_PREFIX, load_policy

POLICY_FILE = "policy.json"
PARAMETERS_FILE = "policy.safetensors"
CARD_FILE = "README.md"
# Network failures surface as the HTTP library's own errors: OSErrors with requests (older
# huggingface_hub), subclasses of HfHubHTTPError's base class with httpx.
_NETWORK_ERRORS = (OSError, HfHubHTTPError.__bases__[0])
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


def _download(repo_id: str, revision: str | None, filename: str) -> str:
    """The local path of ``filename`` from the Hub cache (downloading it when online); clear errors."""
    where = _describe(repo_id, revision)
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
            f"(cache: {constants.HF_HUB_CACHE}); check the network connection"
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


def load_hub_policy(repo_spec: str) -> Policy:
    """The policy in ``policy.json`` of the Hub repository ``org/name[@revision]`` (validated)."""
    repo_id, revision = parse_repo_spec(repo_spec)
    path = Path(_download(repo_id, revision, POLICY_FILE))
    try:
        return Policy.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, RecursionError) as error:
        raise ValueError(f"invalid {POLICY_FILE} in {_describe(repo_id, revision)}: {error}") from None


def _cached_as_absent(repo_id: str, revision: str | None, filename: str) -> bool:
    """True when the Hub cache records that ``filename`` is absent from the repository at that revision."""
    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    return cached is not None and not isinstance(cached, str)


def load_hub_parameters(repo_spec: str) -> dict[str, torch.Tensor] | None:
    """The tensors of ``policy.safetensors`` in the Hub repository (None if it has none); safetensors only."""
    repo_id, revision = parse_repo_spec(repo_spec)
    if constants.HF_HUB_OFFLINE and _cached_as_absent(repo_id, revision, PARAMETERS_FILE):
        return None
    try:
        path = _download(repo_id, revision, PARAMETERS_FILE)
    except MissingHubFileError:
        return None
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"invalid {PARAMETERS_FILE} in {_describe(repo_id, revision)}: {error}") from None


def _read_parameters(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a safetensors file, after checking that safetensors reads them."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read parameters file {str(path)!r}: {error.strerror or error}") from None
    try:
        load(data)
    except (SafetensorError, ValueError) as error:
        raise ValueError(f"parameters file {str(path)!r} is not a valid safetensors file: {error}") from None
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
