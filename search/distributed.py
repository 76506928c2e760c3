"""Data-parallel search under torchrun: the processes, each one's share of a batch, and the collectives.

torchrun (``torch.distributed.run``) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and ``LOCAL_WORLD_SIZE`` for every process it starts; outside torchrun there is
one process, :data:`SINGLE`, and nothing here communicates. The process group
uses NCCL on CUDA and gloo on the CPU, with a timeout on every collective, so
that a process that dies or stalls ends the job instead of hanging it.

Messages and files travel between processes as bytes in uint8 tensors (never pickled).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from dada_transforms.files import read_regular_file

from .settings import SearchInputError

DEFAULT_TIMEOUT_S = 600.0
_MAX_MESSAGE_BYTES = 4096
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of one search."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files, shows progress and pushes to the Hub."""
        return self.rank == 0

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This process's part of a global batch: the ``rank``-th of ``world_size`` equal slices of dimension 0."""
        size = tensor.shape[0] // self.world_size
        return tensor[self.rank * size : (self.rank + 1) * size]

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


SINGLE = Processes()


def processes_from_environment() -> Processes:
    """The processes torchrun started (from its environment variables), or :data:`SINGLE` outside torchrun.

    Raises:
        SearchInputError: for environment variables that are not consistent integers.
    """
    if "WORLD_SIZE" not in os.environ:
        return SINGLE

    def read(name: str, default: str | None) -> int:
        text = os.environ.get(name, default)
        try:
            return int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SearchInputError(f"environment variable {name} must be an integer (torchrun sets it), got {text!r}") from None

    world_size = read("WORLD_SIZE", None)
    values = {
        "RANK": read("RANK", None),
        "WORLD_SIZE": world_size,
        "LOCAL_RANK": read("LOCAL_RANK", "0"),
        "LOCAL_WORLD_SIZE": read("LOCAL_WORLD_SIZE", str(world_size)),
    }
    processes = Processes(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"])
    if not (0 <= processes.rank < processes.world_size and 0 <= processes.local_rank < processes.local_world_size):
        raise SearchInputError(f"inconsistent torchrun environment: {values}")
    return processes


def process_device(processes: Processes, device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for CUDA under torchrun, else ``device``.

    Raises:
        SearchInputError: when this machine has fewer CUDA devices than processes.
    """
    if not processes.distributed or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if processes.local_rank >= count:
        raise SearchInputError(
            f"{processes.local_world_size} processes per machine need as many CUDA devices, this machine has {count}; "
            f"pass --nproc-per-node {count} to torchrun"
        )
    return torch.device("cuda", processes.local_rank)


@contextmanager
def process_group(processes: Processes, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """``torch.distributed``'s default process group for the search's lifetime (nothing for one process).

    NCCL for CUDA devices, gloo otherwise; the rendezvous is torchrun's (``env://``).
    """
    if not processes.distributed:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    options = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **options)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _bytes_tensor(data: bytes, device: torch.device) -> torch.Tensor:
    if not data:
        return torch.zeros(0, dtype=torch.uint8, device=device)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_bytes(processes: Processes, data: bytes | None) -> bytes:
    """Rank 0's ``data`` on every process (the others pass None)."""
    if not processes.distributed:
        return data or b""
    device = _collective_device()
    size = torch.tensor([len(data) if processes.is_main else 0], dtype=torch.int64, device=device)
    dist.broadcast(size, 0)
    buffer = _bytes_tensor(data, device) if processes.is_main else torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(buffer, 0)
    return bytes(buffer.cpu().numpy()) if not processes.is_main else data


def _gather_messages(processes: Processes, message: str) -> list[str]:
    """Every process's ``message`` (at most 4 KiB of UTF-8 each), in rank order."""
    device = _collective_device()
    encoded = message.encode("utf-8")[:_MAX_MESSAGE_BYTES]
    buffer = torch.zeros(_MAX_MESSAGE_BYTES + 8, dtype=torch.uint8, device=device)
    buffer[:8] = torch.tensor(list(len(encoded).to_bytes(8, "little")), dtype=torch.uint8)
    buffer[8 : 8 + len(encoded)] = _bytes_tensor(encoded, device)
    gathered = [torch.empty_like(buffer) for _ in range(processes.world_size)]
    dist.all_gather(gathered, buffer)
    messages = []
    for item in gathered:
        raw = bytes(item.cpu().numpy())
        length = int.from_bytes(raw[:8], "little")
        messages.append(raw[8 : 8 + length].decode("utf-8", errors="replace"))
    return messages


def lost_other_process(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process stopped or stalled."""
    if isinstance(error, dist.DistError):
        return True
    text = str(error).lower()
    words = ("gloo", "nccl", "connection", "timed out", "timeout", "pair closure")
    return isinstance(error, RuntimeError) and any(word in text for word in words)


class AgreedError(SearchInputError):
    """A user error that every process raises together; rank 0 reports it."""


def agreed(processes: Processes, function: Callable[[], _Result]) -> _Result:
    """``function()`` on every process; a :class:`SearchInputError` on any of them is raised on all.

    The error raised names the process it came from (when it is not rank 0),
    so that one clear message reports a problem that only one machine has.
    """
    if not processes.distributed:
        return function()
    try:
        result, message = function(), ""
    except SearchInputError as error:
        result, message = None, str(error) or type(error).__name__
    messages = _gather_messages(processes, message)
    for rank, text in enumerate(messages):
        if text:
            raise AgreedError(text if rank == 0 else f"on rank {rank} of {processes.world_size}: {text}")
    return result  # type: ignore[return-value]


def check_agreement(processes: Processes, values: dict[str, Any], what: str) -> None:
    """Check that every process holds the same ``values`` (JSON-encodable; at most 4 KiB encoded).

    Raises:
        AgreedError: on every process when they differ, naming ``what``, each differing key, and
            which ranks hold which value (one message, the same everywhere).
    """
    if not processes.distributed:
        return
    encoded = json.dumps(values, sort_keys=True)
    if len(encoded.encode("utf-8")) > _MAX_MESSAGE_BYTES:
        raise ValueError(f"{what} to compare take {len(encoded)} bytes, more than {_MAX_MESSAGE_BYTES}")
    every = [json.loads(text) for text in _gather_messages(processes, encoded)]
    differences = []
    for key in sorted(set().union(*every)):
        ranks: dict[str, list[int]] = {}
        for rank, held in enumerate(every):
            ranks.setdefault(json.dumps(held.get(key)), []).append(rank)
        if len(ranks) > 1:
            held_by = "; ".join(
                f"{value} on rank{'s' if len(owners) > 1 else ''} {', '.join(map(str, owners))}" for value, owners in ranks.items()
            )
            differences.append(f"{key!r} ({held_by})")
    if differences:
        raise AgreedError(
            f"the {processes.world_size} processes of this job differ in {what}: {'; '.join(differences)}; "
            f"start every process with the same arguments and data"
        )


def barrier(processes: Processes) -> None:
    """Wait until every process gets here (bounded by the process group's timeout)."""
    if processes.distributed:
        dist.barrier()


def average_(processes: Processes, tensors: list[torch.Tensor]) -> None:
    """Replace each tensor (all of one dtype) by its mean over the processes, in place, with one collective.

    Every process divides the same all-reduced sum, so the results are bit-identical everywhere.
    """
    if not processes.distributed or not tensors:
        return
    flat = torch.cat([tensor.detach().reshape(-1) for tensor in tensors])
    dist.all_reduce(flat)
    flat.div_(processes.world_size)
    offset = 0
    for tensor in tensors:
        count = tensor.numel()
        tensor.copy_(flat[offset : offset + count].view_as(tensor))
        offset += count


def sum_(processes: Processes, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the processes (in place; returned)."""
    if processes.distributed:
        dist.all_reduce(tensor)
    return tensor


def gather(processes: Processes, tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` (same shape everywhere) concatenated along dimension 0, in rank order."""
    if not processes.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(processes.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@contextmanager
def shared_folder(processes: Processes, folder: Path, names: Callable[[Path], list[str]], limit: int) -> Iterator[Path]:
    """``folder`` on rank 0; on the other processes a private copy of its files ``names(folder)`` sent by rank 0.

    So that every process can read rank 0's checkpoint without a shared file system.
    Rank 0 reads each file whole first, checked to be a regular file of at most
    ``limit`` bytes.

    Raises:
        AgreedError: on every process, when rank 0 cannot read a file.
    """
    if not processes.distributed:
        yield folder
        return

    def read() -> list[tuple[str, bytes]] | None:
        if not processes.is_main:
            return None
        try:
            return [(name, read_regular_file(folder / name, limit, "checkpoint file")) for name in names(folder)]
        except ValueError as error:
            raise SearchInputError(f"{error}; cannot share the checkpoint with the other processes") from None

    contents = agreed(processes, read)
    listing = broadcast_bytes(processes, "\n".join(name for name, _ in contents).encode() if processes.is_main else None)
    files = [name for name in listing.decode().split("\n") if name]
    if processes.is_main:
        for _, content in contents:
            broadcast_bytes(processes, content)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="dada-search-checkpoint-") as copy:
        for name in files:
            (Path(copy) / Path(name).name).write_bytes(broadcast_bytes(processes, None))
        yield Path(copy)
