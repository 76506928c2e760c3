"""Throughput of timm's whole training pipeline with ``dada-imagenet`` against timm's own auto-augments.

    python bench/bench_timm.py [--seconds 3] [--size 224]

Builds ``timm.data.create_transform(size, is_training=True, auto_augment=...)`` for
``dada-imagenet``, ``rand-m9-mstd0.5``, ``original`` and no auto-augment, runs each on
PIL photos (crop, flip, augment, to tensor, normalise) in one thread, and prints
images/s and the ratio to ``dada-imagenet``.
"""

from __future__ import annotations

import argparse
import platform

import timm
import timm.data
import torch
from bench_transform import photos, pil_rate

from dada_transforms.timm_integration import register

CONFIGS = ("dada-imagenet", "rand-m9-mstd0.5", "original", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per pipeline (default 3)")
    parser.add_argument("--size", type=int, default=224, help="output size of the pipeline (default 224)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    register()
    images = photos(int(args.size * 1.15))
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, timm {timm.__version__}")
    print(f"timm create_transform({args.size}, is_training=True, auto_augment=...), PIL photos, one thread")
    rates = {}
    for config in CONFIGS:
        transform = timm.data.create_transform(args.size, is_training=True, auto_augment=config)
        rates[config] = pil_rate(transform, images, args.seconds)
    dada_rate = rates["dada-imagenet"]
    for config, rate in rates.items():
        ratio = "" if config == "dada-imagenet" else f"   dada-imagenet / this = {dada_rate / rate:.2f}x"
        print(f"  {str(config):18s} {rate:8.0f} images/s{ratio}")


if __name__ == "__main__":
    main()
