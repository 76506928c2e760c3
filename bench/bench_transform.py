"""Throughput of DADA against torchvision's and timm's AutoAugment, measured in one run.

    python bench/bench_transform.py [--seconds 2] [--device cuda]

Prints images/s and ratios:
- PIL path, one thread, 224x224 photos: DADA("imagenet") vs torchvision v2
  AutoAugment(IMAGENET) vs timm auto_augment_transform("original").
- Tensor path, uint8, batch 256: batched DADA vs a per-image loop (CPU at 32x32
  and 224x224; CUDA at 224x224 when a device is present), and the 32x32 batch
  against the per-image PIL path (the issue's 2x target).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from importlib import resources

import torch
import torchvision
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF
from PIL import Image
from timm.data.auto_augment import auto_augment_transform

from dada_transforms import DADA


def photos(size: int, count: int = 32) -> list[Image.Image]:
    """Crops of the package's demo photo (real image statistics), resized to ``size``."""
    assets = [entry for entry in (resources.files("dada_transforms") / "assets").iterdir() if entry.name.endswith(".jpg")]
    with resources.as_file(assets[0]) as path:
        source = Image.open(path).convert("RGB")
    crops = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(count):
        side = int(torch.randint(source.width // 2, source.width + 1, (1,), generator=generator))
        x = int(torch.randint(0, source.width - side + 1, (1,), generator=generator))
        y = int(torch.randint(0, source.height - min(side, source.height) + 1, (1,), generator=generator))
        crops.append(source.crop((x, y, x + side, y + min(side, source.height))).resize((size, size), Image.BICUBIC))
    return crops


def interleaved_rates(
    runs: dict[str, Callable[[], int]], seconds: float, synchronize: Callable[[], None] = lambda: None, rounds: int = 9
) -> dict[str, float]:
    """Images/s of each ``run()`` (which returns how many images it did): the median of short
    windows taken in turn, so that a machine whose speed drifts affects every contender alike."""
    windows: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    synchronize()
    for _ in range(rounds):
        for name, run in runs.items():
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / rounds:
                done += run()
            synchronize()
            windows[name].append(done / (time.perf_counter() - start))
    return {name: statistics.median(rates) for name, rates in windows.items()}


def pil_run(transform: Callable, images: list[Image.Image]) -> Callable[[], int]:
    def run() -> int:
        for image in images:
            transform(image)
        return len(images)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per contender and measurement")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, one CPU thread")

    print("\nPIL path, 224x224 photos, images/s (one thread)")
    photos_224 = photos(224)
    dada = DADA("imagenet")
    contenders = {
        "DADA(imagenet)": dada,
        "torchvision v2 AutoAugment(IMAGENET)": v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
        'timm auto_augment_transform("original")': auto_augment_transform(
            "original", {"translate_const": int(224 * 0.45), "img_mean": (124, 116, 104)}
        ),
    }
    rates = interleaved_rates({name: pil_run(t, photos_224) for name, t in contenders.items()}, 3 * args.seconds)
    dada_rate = rates.pop("DADA(imagenet)")
    print(f"  {'DADA(imagenet)':42s} {dada_rate:9.0f}")
    for name, rate in rates.items():
        print(f"  {name:42s} {rate:9.0f}   DADA / this = {dada_rate / rate:.2f}x")

    print(f"\nTensor path, uint8, batch {args.batch_size}, images/s")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for size in (32, 224):
            batch = torch.stack([TF.pil_to_tensor(image) for image in photos(size)])
            batch = batch.repeat(args.batch_size // len(batch) + 1, 1, 1, 1)[: args.batch_size].to(device)
            single = batch[:32]
            runs = {
                "batched": lambda: len(dada(batch)),
                "loop": lambda: sum(1 for image in single if dada(image) is not None),
            }
            if device == "cpu" and size == 32:
                runs["pil"] = pil_run(dada, [TF.to_pil_image(image) for image in single])
            rates = interleaved_rates(runs, len(runs) * args.seconds, sync)
            print(f"  {device:4s} {size:3d}x{size:<3d} batched {rates['batched']:9.0f}   per-image loop "
                  f"{rates['loop']:8.0f}   batched / loop = {rates['batched'] / rates['loop']:.1f}x")
            if "pil" in rates:
                print(f"  cpu   32x32  per-image PIL path {rates['pil']:9.0f}   batched / PIL = "
                      f"{rates['batched'] / rates['pil']:.1f}x (target >= 2x)")


if __name__ == "__main__":
    main()
