"""Throughput of DADA against torchvision's, timm's and kornia's AutoAugment, measured in one run.

    python bench/bench_transform.py [--quick] [--seconds 3] [--no-compile] [--device cuda]

Prints images/s with the anchors alongside (each group timed in alternating windows, medians),
on one CPU thread:
- PIL path, 224x224 photos: DADA("imagenet") vs torchvision v2 AutoAugment(IMAGENET)
  vs timm auto_augment_transform("original").
- One 224x224 uint8 tensor at a time: DADA vs torchvision v2 AutoAugment(IMAGENET),
  RandAugment and TrivialAugmentWide on the same tensors (target: 1.5x AutoAugment).
- uint8 batches of 256 at 32x32 and of 64 at 224x224: DADA batched, eager and
  compiled, vs the per-image PIL path (targets 4x and 0.5x), vs torchvision v2
  AutoAugment on the whole batch (one draw per batch) and vs kornia's
  ``kornia.augmentation.auto.AutoAugment`` (float input, as kornia needs).
- ``--device cuda``: the batch of 256 at 224x224 on the GPU, eager and compiled, vs
  torchvision and kornia there (target: 50,000 img/s), timed with torch.cuda.synchronize().

kornia is a bench-only extra: ``pip install -e .[bench]``.
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


def print_rates(title: str, rates: dict[str, float], subject: str, targets: dict[str, str] | None = None) -> None:
    """The subject's rate, then each anchor's with the ratio subject / anchor (and its target, if any)."""
    print(f"\n{title}")
    print(f"  {subject:48s} {rates[subject]:10.0f}")
    for name, rate in rates.items():
        if name != subject:
            target = f"  (target >= {targets[name]})" if targets and name in targets else ""
            print(f"  {name:48s} {rate:10.0f}   {subject} / this = {rates[subject] / rate:.2f}x{target}")


def compiled_transform(size: int, batch: torch.Tensor, synchronize: Callable[[], None]) -> DADA:
    """``DADA("imagenet", compile=True)``, compiled for ``batch`` (the first-call cost is printed)."""
    transform = DADA("imagenet", compile=True)
    start = time.perf_counter()
    transform(batch)
    synchronize()
    print(f"  (compiling for {tuple(batch.shape)} {batch.device.type}: first call {time.perf_counter() - start:.0f} s)")
    return transform


def kornia_auto_augment() -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        from kornia.augmentation.auto import AutoAugment
    except ImportError:
        print("  (kornia not installed: pip install -e .[bench])")
        return None
    return AutoAugment("imagenet")


def tensor_batch(size: int, count: int, device: str) -> torch.Tensor:
    batch = torch.stack([TF.pil_to_tensor(image) for image in photos(size)])
    return batch.repeat(count // len(batch) + 1, 1, 1, 1)[:count].to(device).contiguous()


def batch_contenders(
    batch: torch.Tensor, compile: bool, synchronize: Callable[[], None]
) -> dict[str, Callable[[], int]]:
    """DADA batched (eager, compiled) and the batch anchors on ``batch`` (uint8, on its device)."""
    dada = DADA("imagenet")
    runs = {"DADA batched, eager": lambda: len(dada(batch))}
    if compile:
        compiled = compiled_transform(batch.shape[-1], batch, synchronize)
        runs["DADA batched, compiled"] = lambda: len(compiled(batch))
    torchvision_aa = v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)
    runs["torchvision v2 AutoAugment, whole batch (1 draw)"] = lambda: len(torchvision_aa(batch))
    kornia_aa = kornia_auto_augment()
    if kornia_aa is not None:
        as_float = batch.float().div(255)
        runs["kornia AutoAugment(imagenet), float batch"] = lambda: len(kornia_aa(as_float))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per contender and measurement")
    parser.add_argument("--quick", action="store_true", help="short windows (about a third of the time)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled contenders (compiling takes minutes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: the GPU batch only")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device, none is available")
    seconds = 1.0 if args.quick else args.seconds
    compile = not args.no_compile
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, one CPU thread")
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
        batch = tensor_batch(224, 256, "cuda")
        runs = batch_contenders(batch, compile, torch.cuda.synchronize)
        runs["per-image PIL path (CPU, one thread)"] = pil_run(DADA("imagenet"), photos(224))
        rates = interleaved_rates(runs, len(runs) * seconds, torch.cuda.synchronize)
        print_rates("CUDA, uint8 batch of 256 at 224x224, images/s (target: DADA >= 50,000)", rates,
                    "DADA batched, eager")
        if compile:
            print(f"  DADA batched, compiled: {rates['DADA batched, compiled']:.0f} img/s "
                  f"({rates['DADA batched, compiled'] / rates['DADA batched, eager']:.2f}x eager)")
        return

    photos_224 = photos(224)
    dada = DADA("imagenet")
    contenders = {
        "DADA(imagenet)": dada,
        "torchvision v2 AutoAugment(IMAGENET)": v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
        'timm auto_augment_transform("original")': auto_augment_transform(
            "original", {"translate_const": int(224 * 0.45), "img_mean": (124, 116, 104)}
        ),
    }
    rates = interleaved_rates({name: pil_run(t, photos_224) for name, t in contenders.items()}, 3 * seconds)
    print_rates("PIL path, 224x224 photos, images/s", rates, "DADA(imagenet)")

    tensors_224 = [TF.pil_to_tensor(image) for image in photos_224]
    contenders = {
        "DADA(imagenet)": dada,
        "torchvision v2 AutoAugment(IMAGENET)": v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
        "torchvision v2 RandAugment": v2.RandAugment(),
        "torchvision v2 TrivialAugmentWide": v2.TrivialAugmentWide(),
    }
    rates = interleaved_rates({name: pil_run(t, tensors_224) for name, t in contenders.items()}, 4 * seconds)
    print_rates("One 224x224 uint8 tensor at a time, images/s", rates, "DADA(imagenet)",
                {"torchvision v2 AutoAugment(IMAGENET)": "1.5x"})

    for size, count, target in ((32, 256, "4x"), (224, 64, "0.5x")):
        batch = tensor_batch(size, count, "cpu")
        runs = batch_contenders(batch, compile, lambda: None)
        runs["per-image PIL path"] = pil_run(dada, photos(size))
        rates = interleaved_rates(runs, len(runs) * seconds)
        targets = {"per-image PIL path": target}
        if size == 224:
            targets["kornia AutoAugment(imagenet), float batch"] = "1x"
        print_rates(f"uint8 batch of {count} at {size}x{size}, images/s", rates, "DADA batched, eager", targets)
        if compile:
            print(f"  compiled / eager = {rates['DADA batched, compiled'] / rates['DADA batched, eager']:.2f}x; "
                  f"compiled / per-image PIL path = {rates['DADA batched, compiled'] / rates['per-image PIL path']:.2f}x")


if __name__ == "__main__":
    main()
