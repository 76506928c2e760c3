"""Reading files safely: regular files only, never more than a bound, and a result's JSON/safetensors pair checked.

A FIFO, a device (``/dev/zero``) or a folder given where a file is expected is an
error at once: the file is opened without blocking and checked to be a regular
file before anything is read, and reading stops at the caller's bound.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any

MAX_PARAMETERS_FILE_BYTES = 64 * 1024 * 1024
"""The largest parameters (safetensors) file read (a search result with its history is well under 1 MiB)."""


def read_regular_file(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; ValueError naming ``what`` and the path.

    ``what`` says what the file is for the messages (e.g. ``"policy file"``).
    """
    where = f"{what} {str(path)!r}"
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens without waiting
    except OSError as error:
        raise ValueError(f"cannot read {where}: {error.strerror or error}") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError(f"cannot read {where}: not a regular file")
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise ValueError(f"cannot read {where}: {error.strerror or error}") from None
    finally:
        os.close(descriptor)
    if len(data) > limit:
        raise ValueError(f"{where} is larger than the limit of {limit} bytes")
    return data


def check_recorded_sha256(metadata: Any, content: bytes, policy_where: str, parameters_where: str) -> None:
    """Check ``content`` (a result's safetensors) against the SHA-256 its policy JSON records, if it records one.

    ``metadata`` is the policy's metadata; a dada-search result records
    ``{"parameters": {"file": ..., "sha256": ...}}`` there. The two ``where`` strings
    name the files in the message.

    Raises:
        ValueError: when the recorded hash is malformed or differs from the content's.
    """
    record = metadata.get("parameters") if isinstance(metadata, dict) else None
    if record is None:
        return
    recorded = record.get("sha256") if isinstance(record, dict) else None
    if not isinstance(recorded, str):
        raise ValueError(f"{policy_where} records its parameters file wrongly: 'parameters' must hold a 'sha256' string")
    actual = hashlib.sha256(content).hexdigest()
    if actual != recorded.lower():
        raise ValueError(
            f"{parameters_where} does not belong to {policy_where}: its SHA-256 is {actual[:12]}..., the JSON records "
            f"{recorded[:12]!r}... (the files come from different searches, or one was changed or damaged)"
        )


def read_paired_parameters(metadata: Any, policy_file: str | os.PathLike[str], parameters_file: str | os.PathLike[str]) -> bytes:
    """The bytes of a result's safetensors file, checked against the SHA-256 its policy JSON's ``metadata`` records."""
    content = read_regular_file(parameters_file, MAX_PARAMETERS_FILE_BYTES, "parameters file")
    check_recorded_sha256(metadata, content, repr(str(policy_file)), repr(str(parameters_file)))
    return content
