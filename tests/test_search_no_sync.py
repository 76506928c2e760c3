"""A search step never copies from the host to the device nor waits for the device.

The step runs on the ``meta`` device (tensors without data: the accelerator
strategy, as on a GPU, where any read of a device value raises) under
tests/sync_recorder.py's recorder, which also sees ``torch.tensor(python_values,
device=...)`` and copies from the CPU: each a pageable copy followed by a stream
synchronisation on CUDA.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from dada_transforms.search import AugmentationParameters, BilevelSearchStep
from dada_transforms.search.batches import color_jittered, crop_and_flip
from dada_transforms.search.models import build_model

# loaded by path: the tests are imported with --import-mode=importlib (not on sys.path)
_spec = importlib.util.spec_from_file_location("sync_recorder", Path(__file__).with_name("sync_recorder.py"))
sync_recorder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_recorder)


def test_a_search_step_on_the_accelerator_strategy_neither_copies_nor_waits():
    device = torch.device("meta")
    torch.manual_seed(0)
    with device:
        model = build_model("wrn-10-1", 10)
    augmentation = AugmentationParameters().to(device)
    images = torch.empty(8, 3, 16, 16, dtype=torch.uint8, device=device)
    labels = torch.zeros(8, dtype=torch.int64, device=device)
    for sampling in ("per-batch", "per-sample"):
        step = BilevelSearchStep(
            model, augmentation, lr=0.1, weight_decay=5e-4, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), cutout=8,
            lighting=0.1, sampling=sampling,
        )
        step.step(images, labels, images, labels)  # the first step creates the optimisers' states
        with sync_recorder.SyncRecorder() as recorder:
            batch = color_jittered(crop_and_flip(images, 2, None), 0.4, None)
            stats = step.step(batch, labels, images, labels)
        assert recorder.host_to_device == [], (sampling, recorder.host_to_device)
        # a read of a meta tensor's value raises: what is read here is Adam's step count, a CPU tensor
        assert set(recorder.synchronising) <= {"_local_scalar_dense"}, (sampling, recorder.synchronising)
        assert {"convolution", "gather"} <= set(recorder.names)  # the recording saw the step
        assert stats.loss.device == device
