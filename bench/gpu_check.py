"""The checks only a machine with CUDA GPUs can make, in one command, one summary line each.

    python bench/gpu_check.py                 # every check: about 5-8 minutes on one GPU
    python bench/gpu_check.py --only sync-free --device cpu   # one check's Python part on the CPU (for tests)

Checks, each in its own process with a time limit:

- ``cuda-tests``: the suite's CUDA tests (``pytest -k cuda``);
- ``transform-bench``: ``bench/bench_transform.py --device cuda --quick`` (eager and compiled);
- ``search-bench``: ``bench/bench_search.py --device cuda --steps 32``: two epochs of the
  reduced CIFAR-10 search (WRN-40-2, batch 128, 2,000 search-train images) on synthetic
  tensors, each step timed (the default CUDA device, unindexed: the first-step failure of issue 20);
- ``sync-free``: ``torch.cuda.set_sync_debug_mode("error")`` around one batch of the eager
  transform and one search step (with crop, ColorJitter and lighting): any synchronising call fails it;
- ``search-cli``: ``dada-search`` on the default device, a tiny synthetic image folder, 2 epochs;
- ``search-nccl``: the same under torchrun, 2 processes (NCCL, ``--sync-bn``), when 2 GPUs are present.

Exit status: 0 when every check passed, 1 when one failed (its output's last lines go to
stderr), 2 when this machine has no CUDA device (one line says so; nothing is checked).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPOSITORY = Path(__file__).resolve().parent.parent
CHECKS = ("cuda-tests", "transform-bench", "search-bench", "sync-free", "search-cli", "search-nccl")
LIMITS_S = {"cuda-tests": 150, "transform-bench": 150, "search-bench": 90, "sync-free": 60, "search-cli": 60,
            "search-nccl": 90}


def write_image_folder(root: Path, classes: int = 3, per_class: int = 16, size: int = 32) -> None:
    """A small ImageFolder of random RGB PNGs (``classes`` x ``per_class`` of ``size`` px)."""
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = generator.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png")


def sync_free(device: torch.device) -> str:
    """One eager transform batch and one search step with synchronising CUDA calls made errors."""
    from dada_transforms import DADA
    from dada_transforms.search import AugmentationParameters, BilevelSearchStep
    from dada_transforms.search.batches import color_jittered, crop_and_flip
    from dada_transforms.search.device_checks import resolve_device
    from dada_transforms.search.models import build_model

    device = resolve_device(device)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device=device, generator=generator)
    labels = torch.randint(0, 10, (64,), device=device, generator=generator)
    transform = DADA("imagenet")
    step = BilevelSearchStep(
        build_model("wrn-10-1", 10).to(device), AugmentationParameters().to(device), lr=0.1, weight_decay=2e-4,
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), cutout=16, lighting=0.1, generator=generator,
    )

    def one_of_each() -> None:
        transform.apply_batch(images, transform.draw_params(len(images), device))
        batch = color_jittered(crop_and_flip(images, 4, generator), 0.4, generator)
        step.step(batch, labels, images, labels)

    one_of_each()  # first calls: allocations, cuDNN's choices
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
    try:
        one_of_each()
    finally:
        if on_cuda:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize(device)
    return f"no synchronising call on {device}" if on_cuda else f"ran on {device} (sync debug mode is CUDA only)"


def _commands(work: Path, gpus: int) -> dict[str, list[str]]:
    python = sys.executable
    search = [python, "-m", "dada_transforms.search", "--dataset", "imagefolder", "--data-dir", str(work / "images"),
              "--epochs", "2", "--model", "wrn-10-1", "--image-size", "32", "--batch-size", "8", "--no-progress"]
    commands = {
        "cuda-tests": [python, "-m", "pytest", "-q", "-x", "-k", "cuda", str(REPOSITORY / "tests")],
        "transform-bench": [python, str(REPOSITORY / "bench" / "bench_transform.py"), "--device", "cuda", "--quick"],
        "search-bench": [python, str(REPOSITORY / "bench" / "bench_search.py"), "--device", "cuda", "--steps", "32",
                         "--warmup", "2"],
        "sync-free": [python, __file__, "--only", "sync-free", "--device", "cuda"],
        "search-cli": [*search, "--name", "one", "--output", str(work / "one")],
    }
    if gpus >= 2:
        commands["search-nccl"] = [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                   *search[1:], "--sync-bn", "--name", "two", "--output", str(work / "two")]
    return commands


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def run_checks(selected: list[str]) -> int:
    """Every selected check in turn; one summary line each on stdout; 1 if any failed."""
    gpus = torch.cuda.device_count()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        work = Path(folder)
        write_image_folder(work / "images")
        commands = _commands(work, gpus)
        for name in selected:
            if name not in commands:
                print(f"gpu_check: SKIP {name}: needs 2 CUDA devices, this machine has {gpus}", flush=True)
                continue
            started = time.monotonic()
            try:
                result = subprocess.run(commands[name], capture_output=True, text=True, timeout=LIMITS_S[name],
                                        cwd=REPOSITORY)
                passed, output = result.returncode == 0, result.stdout + result.stderr
                detail = _last_line(result.stdout if passed else output)
            except subprocess.TimeoutExpired as expired:
                passed, output = False, f"{expired.stdout or ''}{expired.stderr or ''}"
                detail = f"stopped after its limit of {LIMITS_S[name]} s"
            seconds = time.monotonic() - started
            print(f"gpu_check: {'PASS' if passed else 'FAIL'} {name} ({seconds:.0f} s): {detail}", flush=True)
            if not passed:
                failed += 1
                tail = "\n".join(str(output).splitlines()[-25:])
                print(f"--- {name}: last lines of its output ---\n{tail}", file=sys.stderr, flush=True)
    print(f"gpu_check: {len(selected) - failed} of {len(selected)} checks passed on {gpus} GPU(s) "
          f"({torch.cuda.get_device_name(0)})", flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=CHECKS, action="append", help="run only this check (repeatable)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="with --only sync-free: where its Python part runs (cpu: a dry run for tests)")
    args = parser.parse_args()
    if args.only == ["sync-free"] and args.device == "cpu":
        print(f"gpu_check: sync-free: {sync_free(torch.device('cpu'))}")
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing checked")
        return 2
    if args.only == ["sync-free"]:
        print(f"gpu_check: sync-free: {sync_free(torch.device('cuda'))}")
        return 0
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
    return run_checks(args.only or list(CHECKS))


if __name__ == "__main__":
    sys.exit(main())
