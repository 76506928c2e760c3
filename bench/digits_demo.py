"""Is a searched policy better? The digits demonstration: offline, on the CPU, paired over seeds.

scikit-learn ships 1,797 real 8x8 handwritten digits (``sklearn.datasets.load_digits``).
This script writes them as an image folder, upscaled to 16 px (bicubic):

- ``DIR/train/``: a reduced split of ``--train-size`` images (stratified, seed 0),
  which the searches and the evaluated networks train on;
- ``DIR/test/``: the other images, held out: only ``evaluate`` scores on them.

then runs, printing each command line before it runs it (on one CPU thread:
repeatable numbers, and faster than two threads on a busy machine):

1. two searches on ``DIR/train`` (``--sampling per-batch``, the paper's, and
   ``--sampling per-sample``), written to ``DIR/policies/``;
2. with ``--check-repeat``, the per-batch search once more into ``DIR/repeat/``,
   compared with the first (see :func:`compare_results`): the script stops with
   exit status 1 if the searched policy differs;
3. ``dada-transforms plot`` of each search's trajectories;
4. ``dada-transforms evaluate`` of both policies against the baselines (by
   default all of them: no-policy, initial, random, published, randaugment,
   autoaugment, trivialaugment), trained on ``DIR/train``, scored on ``DIR/test``,
   ``--seeds`` seeds: paired differences, 95 % intervals and verdicts.

Usage: ``python bench/digits_demo.py [--dir digits-demo] [--check-repeat] [--write-only]``;
the numbers of one run are in docs/search.md ("Is a searched policy better?"). The
defaults (100 training digits, 120 evaluation epochs, Cutout 0) are a regime where
the network fits its training digits, so a policy is not judged by how much it
slows fitting; on a quiet 2-core machine the whole run takes about 25 minutes.
Needs scikit-learn (the ``test`` extra) and matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dada_transforms.search.evaluate import BASELINES
from dada_transforms.search.splits import stratified_split

IMAGE_SIZE = 16
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own bound on its JSON header


def write_digits(directory: Path, train_size: int, image_size: int = IMAGE_SIZE) -> tuple[int, int]:
    """Write ``directory/train/DIGIT/*.png`` (``train_size`` images, stratified, seed 0) and ``directory/test/``.

    Each 8x8 digit is upscaled (bicubic) to ``image_size`` px.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    train, test = stratified_split(digits.target, train_size, seed=0)
    for part, indices in (("train", train), ("test", test)):
        shutil.rmtree(directory / part, ignore_errors=True)
        for index in indices.tolist():
            folder = directory / part / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[index] * (255 / 16)).round().astype(np.uint8)  # values 0..16
            image = Image.fromarray(pixels, mode="L").resize((image_size, image_size), Image.Resampling.BICUBIC)
            image.convert("RGB").save(folder / f"{index:04d}.png")
    return len(train), len(test)


def _run(command: list[str]) -> None:
    print(f"\n$ OMP_NUM_THREADS=1 {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"({time.perf_counter() - start:.0f} s)", flush=True)


def describe_movement(result: str) -> str:
    """How far a search moved from its start (weights 1/105, p = m = 0.5), and from its noise band when it records one."""
    from dada_transforms.plot import load_search_history

    history = load_search_history(result)
    weights, probabilities, magnitudes = history.weights[-1], history.probabilities[-1], history.magnitudes[-1]
    text = (
        f"{history.name}: final weights {weights.min():.4f}..{weights.max():.4f} (uniform {1 / 105:.4f}), "
        f"p {probabilities.min():.3f}..{probabilities.max():.3f}, m {magnitudes.min():.3f}..{magnitudes.max():.3f}; "
        f"search-train accuracy {history.accuracy[-1]:.3f}"
    )
    band = history.noise_floor
    if band is not None:
        outside = [
            int(((values - start).abs() > band[key]).sum())
            for values, start, key in ((weights, 1 / 105, "weight"), (probabilities, 0.5, "probability"), (magnitudes, 0.5, "magnitude"))
        ]
        text += f"; outside the noise band: {outside[0]} of 105 weights, {outside[1]} of 210 p, {outside[2]} of 210 m"
    return text


def _safetensors_parts(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The header metadata and each tensor's dtype, shape and bytes of a safetensors file (read by its format)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ValueError(f"{str(path)!r} is not a safetensors file: its header length is {length}")
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    metadata = header.pop("__metadata__", {})
    tensors = {
        name: json.dumps([entry["dtype"], entry["shape"]]).encode() + body[entry["data_offsets"][0] : entry["data_offsets"][1]]
        for name, entry in header.items()
    }
    return metadata, tensors


def _without_parameters_hash(policy_json: bytes) -> Any:
    record = json.loads(policy_json)
    parameters = record.get("metadata", {}).get("parameters")
    if isinstance(parameters, dict):
        parameters.pop("sha256", None)
    return record


def compare_results(first: Path, second: Path) -> tuple[bool, str]:
    """Whether two search results ``NAME.json`` (with ``NAME.safetensors``) hold the same searched policy, and how.

    Byte-identical files are the same. Otherwise they are the same when every tensor
    (dtype, shape, bytes), the safetensors metadata and the JSON are equal, except
    for what follows from the order of the safetensors header's ``__metadata__``
    entries (safetensors writes them from a hash map, so their order, and with it
    the file's SHA-256 that the JSON records, can change from process to process).
    """
    json_a, json_b = first.read_bytes(), second.read_bytes()
    tensors_a, tensors_b = (path.with_suffix(".safetensors") for path in (first, second))
    if json_a == json_b and tensors_a.read_bytes() == tensors_b.read_bytes():
        return True, "the .json and .safetensors files are byte-identical"
    metadata_a, parts_a = _safetensors_parts(tensors_a)
    metadata_b, parts_b = _safetensors_parts(tensors_b)
    if sorted(parts_a) != sorted(parts_b):
        return False, f"the tensors differ in name: {sorted(set(parts_a) ^ set(parts_b))}"
    changed = [name for name in sorted(parts_a) if parts_a[name] != parts_b[name]]
    if changed:
        return False, f"the tensors {', '.join(changed)} differ"
    if metadata_a != metadata_b:
        return False, "the safetensors metadata differ"
    if _without_parameters_hash(json_a) != _without_parameters_hash(json_b):
        return False, "the policy JSON differs (beyond the SHA-256 of the .safetensors)"
    return True, (
        "every tensor (dtype, shape, bytes), the safetensors metadata and the policy JSON are identical; only the order "
        "of the .safetensors header's __metadata__ entries differs (safetensors writes a hash map), and with it the "
        "file's SHA-256 that the JSON records"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="digits-demo", help="where to write everything (default: digits-demo)")
    parser.add_argument("--train-size", type=int, default=100, help="images in the reduced training split (default 100)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help=f"side of the written images (default {IMAGE_SIZE})")
    parser.add_argument("--search-epochs", type=int, default=100, help="epochs of each search (default 100)")
    parser.add_argument("--epochs", type=int, default=120, help="training epochs of each evaluated network (default 120)")
    parser.add_argument("--seeds", type=int, default=5, help="evaluation seeds (default 5)")
    parser.add_argument("--cutout", type=int, default=0, help="Cutout side in the searches and evaluations (default 0)")
    parser.add_argument("--baselines", default=",".join(BASELINES), help="evaluate's --baselines (default: all)")
    parser.add_argument("--check-repeat", action="store_true", help="search per-batch twice and compare the results")
    parser.add_argument("--write-only", action="store_true", help="only write the image folders")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    trained, held_out = write_digits(directory, args.train_size, args.image_size)
    print(f"wrote {trained} training images to {directory / 'train'} and {held_out} held-out images to {directory / 'test'}")
    if args.write_only:
        return 0
    tiny = ["--model", "wrn-10-1", "--image-size", str(args.image_size), "--batch-size", "32", "--device", "cpu"]
    cutout = ["--cutout", str(args.cutout)]

    def search(sampling: str, output: Path) -> Path:
        name = f"digits-{sampling}"
        _run([
            "dada-search", "--dataset", "imagefolder", "--data-dir", str(directory / "train"), *tiny, *cutout,
            "--epochs", str(args.search_epochs), "--sampling", sampling, "--name", name, "--output", str(output),
            "--overwrite",
        ])
        return output / f"{name}.json"

    policies = [search(sampling, directory / "policies") for sampling in ("per-batch", "per-sample")]
    if args.check_repeat:
        same, how = compare_results(policies[0], search("per-batch", directory / "repeat"))
        print(f"\nrepeat check: {'the same searched policy' if same else 'DIFFERENT searched policies'}: {how}", flush=True)
        if not same:
            return 1
    for policy, sampling in zip(policies, ("per-batch", "per-sample")):
        _run(["dada-transforms", "plot", str(policy), "-o", str(directory / f"search-{sampling}.png")])
        print(describe_movement(str(policy)), flush=True)
    _run([
        "dada-transforms", "evaluate", *map(str, policies), "--dataset", "imagefolder", "--data-dir", str(directory / "train"),
        "--test-dir", str(directory / "test"), *tiny, *cutout, "--no-flip", "--epochs", str(args.epochs),
        "--seeds", str(args.seeds), "--baselines", args.baselines,
        "-o", str(directory / "evaluation.png"), "--json", str(directory / "evaluation.json"),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
