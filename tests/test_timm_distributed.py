"""DADA in timm's distributed training: two CPU processes under torchrun, gloo.

The loader test runs timm's distributed loader path as timm's ``train.py`` does it:
``torch.distributed`` set up by ``timm.utils.init_distributed_device``, the per-rank seed
``timm.utils.random_seed(seed, rank)``, then ``create_loader(..., distributed=True,
auto_augment="dada-imagenet")``. Every training image is a copy of one photo and the crop
and flip are switched off, so DADA is the only source of difference between ranks.

torchrun runs this file itself as the worker script (see ``__main__`` at the bottom).

timm's ``train.py`` is not in timm's wheel: set ``DADA_TIMM_TRAIN_PY`` to a local copy to
run it under torchrun (see docs/timm.md, "Distributed training (torchrun)").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SEED = 42
SIZE = 32
BATCH = 4
COPIES = 16  # 8 images per rank: 2 batches each
TRAIN_PY = os.environ.get("DADA_TIMM_TRAIN_PY")


def _torchrun(script: Path, *arguments: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "DADA_TRANSFORMS_TIMM"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), *arguments],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


# -- the worker: one rank -------------------------------------------------------------


def _register_if_hook_inactive() -> None:
    """The .pth hook makes timm accept ``dada-...``; ``register()`` is its documented fallback."""
    if not any(getattr(finder, "is_dada_timm_finder", False) for finder in sys.meta_path):
        from dada_transforms.timm_integration import register

        register()


def _augmented_batches(train_dir: Path, seed: int, rank: int, num_workers: int) -> torch.Tensor:
    """All batches of one epoch on this rank, seeded as timm's train.py seeds: ``random_seed(seed, rank)``."""
    import timm.data
    import timm.utils

    timm.utils.random_seed(seed, rank)
    dataset = timm.data.create_dataset("", root=str(train_dir), is_training=True)
    loader = timm.data.create_loader(
        dataset, (3, SIZE, SIZE), batch_size=BATCH, is_training=True, auto_augment="dada-imagenet",
        scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,  # crop and flip keep the image: only DADA is random
        use_prefetcher=False, distributed=True, num_workers=num_workers,
    )
    assert isinstance(loader.sampler, torch.utils.data.distributed.DistributedSampler)
    return torch.stack([images for images, _ in loader])


def _worker(train_dir: Path, out_dir: Path) -> None:
    import timm.utils

    _register_if_hook_inactive()
    args = argparse.Namespace(device="cpu")
    timm.utils.init_distributed_device(args)  # as train.py: env:// from torchrun, gloo on the CPU
    assert args.distributed and args.world_size == 2 and torch.distributed.get_backend() == "gloo"
    batches = {
        "per_rank": _augmented_batches(train_dir, SEED, args.rank, num_workers=0),
        "per_rank_workers": _augmented_batches(train_dir, SEED, args.rank, num_workers=2),
        "same_seed": _augmented_batches(train_dir, SEED, 0, num_workers=0),  # a script that forgets the rank
    }
    torch.save(batches, out_dir / f"rank{args.rank}.pt")
    torch.distributed.destroy_process_group()


# -- the tests ------------------------------------------------------------------------


@pytest.fixture
def one_photo_folder(tmp_path, make_image) -> Path:
    """An ImageFolder whose every image is the same photo: both ranks see the same picture."""
    train_dir = tmp_path / "data" / "train"
    (train_dir / "photo").mkdir(parents=True)
    photo = make_image(SIZE, SIZE, seed=7)
    for index in range(COPIES):
        photo.save(train_dir / "photo" / f"{index}.png")
    return train_dir


def _run_job(train_dir: Path, out_dir: Path) -> list[dict[str, torch.Tensor]]:
    out_dir.mkdir()
    result = _torchrun(Path(__file__), str(train_dir), str(out_dir), cwd=out_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def test_two_ranks_augment_with_their_own_streams_and_reruns_reproduce(tmp_path, one_photo_folder):
    first = _run_job(one_photo_folder, tmp_path / "first")
    rank0, rank1 = first
    for key in ("per_rank", "per_rank_workers", "same_seed"):
        assert rank0[key].shape == rank1[key].shape == (COPIES // 2 // BATCH, BATCH, 3, SIZE, SIZE), key

    # the control: the same seed on both ranks gives the same augmented batches of the same photo
    assert torch.equal(rank0["same_seed"], rank1["same_seed"])
    assert not torch.equal(rank0["same_seed"][0, 0], rank0["same_seed"][0, 1])  # DADA is at work
    # seeded per rank, as train.py does it, each rank draws its own augmentations
    for key in ("per_rank", "per_rank_workers"):
        assert not torch.equal(rank0[key][0], rank1[key][0]), key
        differing = (rank0[key] != rank1[key]).flatten(2).any(dim=2)
        assert differing.float().mean() > 0.5, (key, differing)

    second = _run_job(one_photo_folder, tmp_path / "second")
    for rank in (0, 1):
        for key, batches in first[rank].items():
            assert torch.equal(batches, second[rank][key]), (rank, key)


# -- timm's own train.py under torchrun -----------------------------------------------

needs_train_py = pytest.mark.skipif(
    not TRAIN_PY or not Path(TRAIN_PY).is_file(),
    reason="timm's train.py is not in timm's wheel; set DADA_TIMM_TRAIN_PY to a local copy to run this",
)

# timm's train.py wraps the model in DDP with device_ids=[device]; torch's DDP refuses any
# device_ids for a CPU module, whatever --aa is. This launcher drops them for CPU modules
# and runs train.py, unmodified, as __main__ (with register(), the hook's fallback, where
# the .pth hook is not installed).
CPU_DDP_LAUNCHER = '''\
import functools, runpy, sys
from torch.nn.parallel import DistributedDataParallel

if not any(getattr(finder, "is_dada_timm_finder", False) for finder in sys.meta_path):
    from dada_transforms.timm_integration import register
    register()

_init = DistributedDataParallel.__init__

@functools.wraps(_init)
def _cpu_init(self, module, device_ids=None, *args, **kwargs):
    if device_ids is not None and all(p.device.type == "cpu" for p in module.parameters()):
        device_ids = None
    _init(self, module, device_ids, *args, **kwargs)

DistributedDataParallel.__init__ = _cpu_init
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


@needs_train_py
def test_train_py_under_torchrun_two_cpu_processes_with_dada(tmp_path, tiny_image_folder):
    launcher = tmp_path / "cpu_ddp_launch.py"
    launcher.write_text(CPU_DDP_LAUNCHER)
    result = _torchrun(
        launcher, TRAIN_PY, "--data-dir", str(tiny_image_folder), "--model", "test_resnet", "--num-classes", "2",
        "--img-size", "32", "--epochs", "1", "--warmup-epochs", "0", "-b", "4", "--workers", "2",
        "--device", "cpu", "--aa", "dada-imagenet", "--log-interval", "1",
        "--output", str(tmp_path / "out"), "--experiment", "run",
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Process 0, total 2" in output and "Process 1, total 2" in output
    assert "Train: 0 [   1/2 (100%)]" in output  # 16 images, 2 ranks of batch 4: 2 steps each
    assert (tmp_path / "out" / "run" / "summary.csv").is_file()


if __name__ == "__main__":  # a rank, started by torchrun from the loader test
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
