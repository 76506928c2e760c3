"""What would make the host wait for an accelerator, recorded on any device (``meta`` included).

:class:`SyncRecorder` watches the aten operations dispatched (those that read values back, or copy
to the host) and, since ``torch.tensor``/``torch.as_tensor`` from Python numbers dispatch no
operation at all, wraps those too: every host-to-device copy (a new tensor on a device other than the
CPU, or a ``to``/``copy_`` from the CPU to one) is recorded. From pageable memory such a copy makes
the host wait; a steady-state batch or search step must make none::

    with SyncRecorder() as recorder:
        step()
    assert recorder.synchronising == [] and recorder.host_to_device == []
"""

from __future__ import annotations

import functools
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNCHRONISING = frozenset(
    {"nonzero", "nonzero_static", "_local_scalar_dense", "item", "unique", "_unique", "_unique2", "unique_dim",
     "unique_consecutive", "masked_select", "bincount", "histc", "repeat_interleave", "equal", "is_nonzero",
     "allclose", "_assert_async"}
)
_COPIES = frozenset({"_to_copy", "copy_", "_copy_from", "_copy_from_and_resize"})


def _on_accelerator(device) -> bool:
    return device is not None and torch.device(device).type != "cpu"


class SyncRecorder(TorchDispatchMode):
    """Records the aten operations dispatched (``names``), those that would make the host wait for the
    device (``synchronising``), and every host-to-device copy (``host_to_device``, with where it was made)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.synchronising: list[str] = []
        self.host_to_device: list[str] = []
        self._originals: dict[str, object] = {}

    def __enter__(self):
        for name in ("tensor", "as_tensor"):
            original = getattr(torch, name)
            self._originals[name] = original
            setattr(torch, name, self._watched(name, original))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch, name, original)
        return super().__exit__(*exc)

    def _watched(self, name: str, original):
        @functools.wraps(original)
        def create(data, *args, device=None, **kwargs):
            from_device = data.device if isinstance(data, torch.Tensor) else torch.device("cpu")
            if _on_accelerator(device) and from_device.type == "cpu":
                self._record_copy(f"torch.{name} onto {device}")
            return original(data, *args, device=device, **kwargs)

        return create

    def _record_copy(self, what: str) -> None:
        caller = next(
            (frame for frame in reversed(traceback.extract_stack()[:-2]) if "sync_recorder" not in frame.filename), None
        )
        self.host_to_device.append(f"{what} at {caller.filename}:{caller.lineno}" if caller else what)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._overloadpacket.__name__
        self.names.append(name)
        leaves = torch.utils._pytree.tree_leaves((args, kwargs))
        tensors = [value for value in leaves if isinstance(value, torch.Tensor)]
        if name in SYNCHRONISING:
            self.synchronising.append(name)
        elif name.startswith("index") and any(t.dtype == torch.bool for t in tensors[1:]):
            self.synchronising.append(f"{name} with a boolean mask")
        result = func(*args, **kwargs)
        outputs = [value for value in torch.utils._pytree.tree_leaves(result) if isinstance(value, torch.Tensor)]
        accelerated_inputs = any(_on_accelerator(t.device) for t in tensors)
        if accelerated_inputs and any(t.device.type == "cpu" for t in outputs):
            self.synchronising.append(f"{name} copying to the host")
        if name in _COPIES and any(t.device.type == "cpu" for t in tensors) and any(
            _on_accelerator(t.device) for t in outputs
        ):
            self._record_copy(f"{name} from the host")
        return result
