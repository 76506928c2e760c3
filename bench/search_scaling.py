"""Data-parallel ``dada-search`` on this machine: steps/s, scaling and peak host memory, and an 8-GPU estimate.

Run through ``python bench/bench_search.py --nproc N [--stream]``. Each configuration is a
real ``dada-search`` (the Python API) under ``torchrun --nproc-per-node P`` on a synthetic
ImageFolder of JPEG files written to a temporary folder: 1 process, then N processes, in
memory and (``--stream``) streamed by DataLoader workers. Each process records when each
of its search steps ends; throughput is taken over the last epoch (the first is warm-up),
so start-up and data loading are left out. Host memory: the growth of each process's
peak resident set (``ru_maxrss``) above what it held once torch, torchvision and timm
were imported, summed over the processes (the search's own memory: data, model,
activations), and, streamed, the peak resident set of the DataLoader workers (forked, so
it counts pages shared with their parent: an upper bound). With ``--stream`` a data-path
sweep (no training) reads one epoch of image folders of 1x, 4x and 16x the images at
96 px, in memory and streamed, each in a fresh process, and prints the peak memory each
path added: in memory it grows with the dataset, streamed it stays at the workers' prefetch.

The estimate of the published reduced-ImageNet search on 8 GPUs (ResNet-50, 224 px,
global batch 32, 20 epochs of ~94 steps = 1,880 steps) is built from costs measured here,
on ``--device``: one process's search step at batch 4 (its share of 32 on 8 GPUs), plus
two all-reduces of ResNet-50's 25.6 M float32 parameters per step (the network's
gradient through DDP and the validation gradient v; the other collectives are small),
timed between the N processes of the run above on its backend (gloo on the CPU). It is an estimate, not a measurement: run it on a GPU
machine (``--device cuda``) for GPU figures.

This file is also the torchrun worker (``__main__`` at the bottom).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PUBLISHED_STEPS = 20 * 94  # reduced ImageNet: ~3,000 search-train images at batch 32, 20 epochs
RESNET50_PARAMETERS = 25_557_032


def make_image_folder(root: Path, count: int, size: int, classes: int = 4) -> Path:
    """``count`` JPEG files of ``size`` px in ``classes`` folders: smooth random colour fields (decode like photos)."""
    rng = np.random.default_rng(0)
    for label in range(classes):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((size, size), Image.BILINEAR)
        image.save(root / f"class{index % classes}" / f"{index}.jpg", quality=90)
    return root


def _launch(processes: int, options: dict, out: Path) -> list[dict]:
    """One search under torchrun, one torch thread per process; returns each process's record."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               __file__, str(out), json.dumps(options)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"search with {processes} process(es) failed:\n{result.stderr[-3000:]}")
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(processes)]


def _steps_per_second(records: list[dict]) -> float:
    """Steps per second over the last epoch, from the slowest process's step end times."""
    rates = []
    for record in records:
        times = record["step_ends"][-record["steps_per_epoch"] :]
        rates.append((len(times) - 1) / (times[-1] - times[0]))
    return min(rates)


def _search_memory_mb(records: list[dict]) -> float:
    return sum(record["max_rss_kb"] - record["start_rss_kb"] for record in records) / 1024


def _worker_memory_mb(records: list[dict]) -> float:
    return max(record["children_max_rss_kb"] for record in records) / 1024


def scaling_report(nproc: int, stream: bool, device: str, images: int, image_size: int, model: str, batch_size: int,
                   epochs: int, workers: int) -> float:
    """Print steps/s, speed-up, scaling efficiency and peak host memory for 1 and ``nproc`` processes.

    Returns the seconds of one all-reduce of ResNet-50's parameters between the ``nproc``
    processes (None for one process).
    """
    all_reduce_seconds = None
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="dada-bench-") as temporary:
        decoded_mb = images * 3 * image_size**2 / 2**20
        print(f"data-parallel search: {images} JPEG images ({decoded_mb:.0f} MB decoded at {image_size} px), {model}, "
              f"global batch {batch_size}, {epochs} epochs (the last one timed), device {device}, one torch thread "
              f"per process ({cpus} CPU threads here)")
        print(f"{'data path':>10} {'images':>7} {'processes':>9} {'steps/s':>8} {'images/s':>9} {'speed-up':>8} "
              f"{'efficiency':>10} {'search host MB':>14} {'workers MB':>10}")
        runs = [("memory", images, process_count) for process_count in sorted({1, nproc})]
        if stream:
            runs += [("stream", images, process_count) for process_count in sorted({1, nproc})]
        rates: dict[tuple[str, int, int], float] = {}
        for data_path, count, processes in runs:
            root = Path(temporary) / f"images-{count}"
            if not root.exists():
                make_image_folder(root, count, 2 * image_size)
            options = {"dataset": "imagefolder", "data_dir": str(root), "name": "bench", "model": model,
                       "image_size": image_size, "batch_size": batch_size, "epochs": epochs, "device": device,
                       "data_path": data_path, "progress": False,
                       "output": str(Path(temporary) / f"out-{data_path}-{count}-{processes}")}
            if data_path == "stream":
                options["workers"] = workers
            records = _launch(processes, options, Path(temporary) / f"records-{data_path}-{count}-{processes}")
            rate = rates[data_path, count, processes] = _steps_per_second(records)
            if processes > 1 and all_reduce_seconds is None:
                measured = _launch(processes, {"measure_all_reduce": device}, Path(temporary) / "all-reduce")
                all_reduce_seconds = measured[0]["resnet50_all_reduce_s"]
            speedup = rate / rates[data_path, count, 1]
            workers_mb = f"{_worker_memory_mb(records):>10.0f}" if data_path == "stream" else f"{'-':>10}"
            print(f"{data_path:>10} {count:>7} {processes:>9} {rate:>8.2f} {rate * batch_size:>9.0f} {speedup:>7.2f}x "
                  f"{speedup / processes:>9.0%} {_search_memory_mb(records):>14.0f} {workers_mb}")
    print("  efficiency = speed-up / processes at the same global batch (strong scaling); search host MB = growth of "
          "the processes' peak memory above their start (summed); workers MB = peak of one process's decoding workers")
    return all_reduce_seconds


def memory_sweep(images: int, workers: int, batch_size: int = 64, image_size: int = 96) -> None:
    """Peak host memory added by each data path over one epoch, for 1x, 4x and 16x ``images`` (no training)."""
    print(f"data path alone, one epoch at {image_size} px, batch {batch_size}, {workers} decoding worker(s): "
          f"peak host memory added (MB)")
    print(f"{'images':>7} {'decoded MB':>10} {'memory':>8} {'stream':>8} {'stream workers':>14}")
    with tempfile.TemporaryDirectory(prefix="dada-bench-") as temporary:
        for count in (images, 4 * images, 16 * images):
            root = make_image_folder(Path(temporary) / f"images-{count}", count, 2 * image_size)
            added = {}
            for data_path in ("memory", "stream"):
                probe = {"root": str(root), "image_size": image_size, "batch_size": batch_size, "workers": workers,
                         "data_path": data_path}
                result = subprocess.run([sys.executable, __file__, "--data-path-probe", json.dumps(probe)],
                                        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                if result.returncode != 0:
                    raise SystemExit(f"data-path probe failed:\n{result.stderr[-3000:]}")
                added[data_path] = json.loads(result.stdout)
            print(f"{count:>7} {count * 3 * image_size**2 / 2**20:>10.0f} {added['memory']['added_mb']:>8.0f} "
                  f"{added['stream']['added_mb']:>8.0f} {added['stream']['workers_mb']:>14.0f}")


def _data_path_probe(probe: dict) -> None:
    """One epoch of search-train and search-val batches from one data path; prints the memory it added (JSON)."""
    from dada_transforms.search.data import open_search_images, split_halves
    from dada_transforms.search.streaming import MemoryBatches, StreamedBatches

    start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = open_search_images("imagefolder", probe["root"], image_size=probe["image_size"], data_path=probe["data_path"])
    train_indices, val_indices = split_halves(data.labels)
    train, val = data.subset(train_indices), data.subset(val_indices)
    if probe["data_path"] == "stream":
        source = StreamedBatches(train, val, torch.device("cpu"), workers=probe["workers"])
    else:
        source = MemoryBatches(train, val)
    order = torch.randperm(len(train))
    batches = list(order[: len(order) // probe["batch_size"] * probe["batch_size"]].split(probe["batch_size"]))
    total = 0
    for train_images, _, val_images, _ in source.batches(batches, [batch % len(val) for batch in batches]):
        total += int(train_images[:, :, 0, 0].sum()) + int(val_images[:, :, 0, 0].sum())  # touch every batch
    print(json.dumps({
        "added_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_kb) / 1024,
        "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def estimate_published_imagenet(device: str, all_reduce_s: float | None = None, steps: int = 3) -> None:
    """Estimate the published reduced-ImageNet search on 8 GPUs from one process's step at batch 4 here."""
    from dada_transforms.search.augmentation import AugmentationParameters
    from dada_transforms.search.batches import crop_and_flip
    from dada_transforms.search.bilevel import BilevelSearchStep
    from dada_transforms.search.device_checks import resolve_device
    from dada_transforms.search.models import build_model

    target = resolve_device(device)
    torch.manual_seed(0)
    generator = torch.Generator(device=target).manual_seed(0)
    model = build_model("resnet50", 120).to(target)
    augmentation = AugmentationParameters().to(target)
    step = BilevelSearchStep(model, augmentation, lr=0.00125, weight_decay=1e-4, cutout=16,
                             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), color_jitter=0.4, lighting=0.1,
                             generator=generator)
    images = torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8, generator=generator, device=target)
    labels = torch.randint(0, 120, (8,), generator=generator, device=target)
    seconds = []
    for index in range(steps + 1):
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        start = time.perf_counter()
        step.step(crop_and_flip(images[:4], 28, generator), labels[:4], images[4:], labels[4:])
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        if index:  # the first step warms up
            seconds.append(time.perf_counter() - start)
    per_step = statistics.median(seconds)
    total = PUBLISHED_STEPS * per_step
    print(f"published reduced-ImageNet search (ResNet-50, 224 px, global batch 32 = 4 per GPU, {PUBLISHED_STEPS} steps) "
          f"on 8 processes like this one ({device}):")
    print(f"  measured: one process's search step at batch 4: {per_step:.3f} s (median of {steps})")
    if all_reduce_s is not None:
        print(f"  measured: one all-reduce of ResNet-50's {RESNET50_PARAMETERS / 1e6:.1f} M float32 parameters between "
              f"the processes above: {all_reduce_s:.3f} s; two per step")
        total += PUBLISHED_STEPS * 2 * all_reduce_s
    print(f"  estimate: {total / 3600:.2f} hours (the paper: 1.3 GPU-hours on one GPU)")


def _worker(out: Path, options: dict) -> None:
    if "measure_all_reduce" in options:
        seconds = _all_reduce_seconds(options["measure_all_reduce"])
        (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps({"resnet50_all_reduce_s": seconds}))
        return
    import timm  # noqa: F401  (imported by the search anyway: counted in the start)
    import torchvision  # noqa: F401

    from dada_transforms.search.bilevel import BilevelSearchStep
    from dada_transforms.search.loop import search

    start_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step_ends: list[float] = []
    real_step = BilevelSearchStep.step

    def timed_step(self, *arguments):
        stats = real_step(self, *arguments)
        if stats.loss.device.type == "cuda":
            torch.cuda.synchronize(stats.loss.device)
        step_ends.append(time.perf_counter())
        return stats

    BilevelSearchStep.step = timed_step
    dataset = options.pop("dataset")
    search(dataset, **options)
    rank = int(os.environ.get("RANK", "0"))
    steps_per_epoch = len(step_ends) // options["epochs"]
    record = {
        "step_ends": step_ends,
        "steps_per_epoch": steps_per_epoch,
        "start_rss_kb": start_rss_kb,
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_max_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))


def _all_reduce_seconds(device: str, repeats: int = 3) -> float:
    """Median seconds of one all-reduce of ResNet-50's parameter count in float32 between torchrun's processes."""
    import torch.distributed as dist

    on_cuda = device == "cuda"
    if on_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if on_cuda else "gloo")
    tensor = torch.ones(RESNET50_PARAMETERS, device="cuda" if on_cuda else "cpu")
    seconds = []
    try:
        for _ in range(repeats + 1):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(tensor)
            if on_cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
    finally:
        dist.destroy_process_group()
    return statistics.median(seconds[1:])


if __name__ == "__main__":
    if sys.argv[1] == "--data-path-probe":
        _data_path_probe(json.loads(sys.argv[2]))
    else:
        _worker(Path(sys.argv[1]), json.loads(sys.argv[2]))
