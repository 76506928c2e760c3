"""Does a searched policy help? The digits demonstration: offline, on the CPU, in minutes.

scikit-learn ships 1,797 real 8x8 handwritten digits (``sklearn.datasets.load_digits``).
This script writes them as an image folder, upscaled to 16 px (bicubic):

- ``DIR/train/``: a reduced split of ``--train-size`` images (stratified, seed 0),
  which the searches and the evaluated networks train on;
- ``DIR/test/``: the other images, held out: only ``evaluate`` scores on them.

then runs, printing each command line before it runs it (on one CPU thread:
repeatable numbers, and much faster than two threads on a busy machine):

1. two searches on ``DIR/train`` (``--sampling per-batch``, the paper's, and
   ``--sampling per-sample``), written to ``DIR/policies/``;
2. ``dada-transforms plot`` of each search's trajectories;
3. ``dada-transforms evaluate`` of both policies against the baselines (no
   policy, a random policy of the same size, AutoAugment, TrivialAugmentWide),
   trained on ``DIR/train`` and scored on ``DIR/test``.

Usage: ``python bench/digits_demo.py [--dir digits-demo] [--write-only]``; the
numbers of one run are in docs/search.md ("Does a searched policy help?").
Needs scikit-learn (the ``test`` extra) and matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dada_transforms.search.splits import stratified_split

IMAGE_SIZE = 16


def write_digits(directory: Path, train_size: int) -> tuple[int, int]:
    """Write ``directory/train/DIGIT/*.png`` (``train_size`` images, stratified, seed 0) and ``directory/test/``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    train, test = stratified_split(digits.target, train_size, seed=0)
    for part, indices in (("train", train), ("test", test)):
        shutil.rmtree(directory / part, ignore_errors=True)
        for index in indices.tolist():
            folder = directory / part / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[index] * (255 / 16)).round().astype(np.uint8)  # values 0..16
            image = Image.fromarray(pixels, mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
            image.convert("RGB").save(folder / f"{index:04d}.png")
    return len(train), len(test)


def _run(command: list[str]) -> None:
    print(f"\n$ OMP_NUM_THREADS=1 {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"({time.perf_counter() - start:.0f} s)", flush=True)


def describe_movement(result: str) -> str:
    """How far a search moved from its start (weights 1/105, p = m = 0.5), from its recorded history."""
    from dada_transforms.plot import load_search_history

    history = load_search_history(result)
    weights, probabilities, magnitudes = history.weights[-1], history.probabilities[-1], history.magnitudes[-1]
    return (
        f"{history.name}: final weights {weights.min():.4f}..{weights.max():.4f} (uniform {1 / 105:.4f}), "
        f"p {probabilities.min():.3f}..{probabilities.max():.3f}, m {magnitudes.min():.3f}..{magnitudes.max():.3f}; "
        f"search-train accuracy {history.accuracy[-1]:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="digits-demo", help="where to write everything (default: digits-demo)")
    parser.add_argument("--train-size", type=int, default=500, help="images in the reduced training split (default 500)")
    parser.add_argument("--search-epochs", type=int, default=20, help="epochs of each search (default 20)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of each evaluated network (default 30)")
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds (default 3)")
    parser.add_argument("--write-only", action="store_true", help="only write the image folders")
    args = parser.parse_args()
    directory = Path(args.dir)
    trained, held_out = write_digits(directory, args.train_size)
    print(f"wrote {trained} training images to {directory / 'train'} and {held_out} held-out images to {directory / 'test'}")
    if args.write_only:
        return
    tiny = ["--model", "wrn-10-1", "--image-size", str(IMAGE_SIZE), "--batch-size", "32", "--device", "cpu"]
    policies = []
    for sampling in ("per-batch", "per-sample"):
        name = f"digits-{sampling}"
        _run([
            "dada-search", "--dataset", "imagefolder", "--data-dir", str(directory / "train"), *tiny,
            "--cutout", "8", "--epochs", str(args.search_epochs), "--sampling", sampling,
            "--name", name, "--output", str(directory / "policies"),
        ])
        policies.append(str(directory / "policies" / f"{name}.json"))
        _run(["dada-transforms", "plot", policies[-1], "-o", str(directory / f"search-{sampling}.png")])
        print(describe_movement(policies[-1]), flush=True)
    _run([
        "dada-transforms", "evaluate", *policies, "--dataset", "imagefolder", "--data-dir", str(directory / "train"),
        "--test-dir", str(directory / "test"), *tiny, "--cutout", "8", "--no-flip",
        "--epochs", str(args.epochs), "--seeds", str(args.seeds),
        "-o", str(directory / "evaluation.png"), "--json", str(directory / "evaluation.json"),
    ])


if __name__ == "__main__":
    sys.exit(main())
