"""Which search method should be the default? Each method's policy against every baseline, paired over seeds.

For an image folder ``DIR`` with ``DIR/train/`` and ``DIR/test/`` (as
``bench/digits_demo.py --write-only`` and ``bench/photo_patches.py`` write them),
this script runs, printing each command line before it runs it (one CPU thread):

1. the **budget**: one evaluation training run (no policy, seed 0) is timed at
   ``--epochs`` and at 1 epoch; the difference gives its cost per epoch, so process
   start-up and image loading do not count. A search may cost at most
   ``--search-fraction`` (default 1/4) of that run;
2. per **variant** (``--variant``, repeatable; default: the paper's method per batch
   and per sample, and ``compact`` with each objective), two short searches (1 and 6
   epochs) give the search's cost per epoch the same way, and the search then runs
   for as many epochs as the budget allows (``--search-epochs`` fixes them instead);
   the script prints each search's time, the run's time and their ratio;
3. one ``dada-transforms evaluate`` of every searched policy and every baseline
   (``--baselines``), ``--seeds`` paired seeds, trained on ``DIR/train`` and scored
   on ``DIR/test``: it prints the accuracy and paired-difference tables and writes
   ``OUT/evaluation.json``;
4. each searched policy minus the best baseline (the baseline with the highest mean
   accuracy), with its 95 % paired interval; everything (commands, times, epochs,
   margins) in ``OUT/comparison.json``.

The numbers are deterministic given the seeds and the printed command lines; only
the choice of search epochs depends on the machine's speed (the printed ``dada-search``
lines carry it; ``--search-epochs`` repeats it without timing anything).

Usage: ``python bench/method_comparison.py DIR --model wrn-10-1 --image-size 16
--batch-size 32 --cutout 0 --no-flip --epochs 200 [--variant NAME=FLAGS ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from dada_transforms.search.evaluate import KNOWN_BASELINES

DEFAULT_VARIANTS = (
    "paper-per-batch=--method published",
    "paper-per-sample=--method published --sampling per-sample",
    "compact-unrolled=--method compact --objective unrolled",
    "compact-adversarial=--method compact --objective adversarial",
)
DEFAULT_BASELINES = ("no-policy", "initial", "compact-initial", "random", "published", "randaugment", "trivialaugment")
CALIBRATION_EPOCHS = (1, 6)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class Variant(NamedTuple):
    """A search to compare: its policy's name and its ``dada-search`` flags."""

    name: str
    flags: tuple[str, ...]


def parse_variant(text: str) -> Variant:
    """``NAME=FLAGS`` or just ``FLAGS`` (named by the flags' values: ``--method compact --objective adversarial`` ->
    ``compact-adversarial``); ValueError for anything else."""
    name, separator, flags = text.partition("=")
    if not separator or name.startswith("-") or " " in name:
        name, flags = "", text
    tokens = tuple(shlex.split(flags))
    if not tokens or not tokens[0].startswith("--"):
        raise ValueError(f"a variant must be NAME=FLAGS or FLAGS starting with --, got {text!r}")
    owned = {"--dataset", "--data-dir", "--name", "--output", "--epochs", "--overwrite", "--resume", "--seed"}
    clash = sorted(owned.intersection(token.partition("=")[0] for token in tokens))
    if clash:
        raise ValueError(f"variant {text!r} sets {', '.join(clash)}, which this script sets itself")
    values = [token.partition("=")[2] if token.startswith("--") else token for token in tokens]
    name = name or "-".join(value for value in values if value)
    if not _NAME.fullmatch(name):
        raise ValueError(f"a variant's name must be lowercase letters, digits and hyphens, got {name!r} (from {text!r})")
    return Variant(name, tokens)


def training_flags(args: argparse.Namespace) -> list[str]:
    """The flags that searches and evaluations share: the network, image size, batch, lr, Cutout, device."""
    flags = ["--model", args.model, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    if args.lr is not None:
        flags += ["--lr", repr(args.lr)]
    return flags + ["--cutout", str(args.cutout), "--device", "cpu"]


def search_command(args: argparse.Namespace, variant: Variant, epochs: int, output: Path) -> list[str]:
    """The ``dada-search`` command of ``variant`` on ``DIR/train`` for ``epochs`` epochs, written to ``output``."""
    return [
        "dada-search", "--dataset", "imagefolder", "--data-dir", str(Path(args.data) / "train"), *training_flags(args),
        *variant.flags, "--epochs", str(epochs), "--seed", str(args.search_seed), "--name", variant.name,
        "--output", str(output), "--overwrite", "--no-progress",
    ]


def evaluate_command(args: argparse.Namespace, policies: list[Path], baselines: list[str], epochs: int, seeds: int,
                     json_path: Path | None) -> list[str]:
    """The ``dada-transforms evaluate`` command of ``policies`` and ``baselines`` (no chart, no progress bar)."""
    data = Path(args.data)
    command = [
        "dada-transforms", "evaluate", *map(str, policies), "--dataset", "imagefolder", "--data-dir", str(data / "train"),
        "--test-dir", str(data / "test"), *training_flags(args), *(["--no-flip"] if args.no_flip else []),
        "--epochs", str(epochs), "--seeds", str(seeds), "--baselines", ",".join(baselines), "--no-chart", "--no-progress",
    ]
    return command + (["--json", str(json_path)] if json_path is not None else [])


def run(command: list[str]) -> float:
    """Run ``command`` on one CPU thread, printing it first; its wall time in seconds."""
    print(f"\n$ OMP_NUM_THREADS=1 {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - start
    print(f"({seconds:.1f} s)", flush=True)
    return seconds


def per_epoch(short: tuple[int, float], long: tuple[int, float]) -> float:
    """Seconds per epoch from two timed runs ``(epochs, seconds)``: what the extra epochs cost (start-up cancels).

    When the longer run took no longer (timing noise on a busy machine), the longer run's seconds per epoch,
    start-up included: an upper bound, so the search stays within its budget.
    """
    (epochs_a, seconds_a), (epochs_b, seconds_b) = short, long
    if epochs_b <= epochs_a:
        raise ValueError(f"the longer run must have more epochs: {epochs_a} and {epochs_b}")
    if seconds_b <= seconds_a:  # timing noise larger than the extra epochs' cost: bound it by the longer run's average
        return seconds_b / epochs_b
    return (seconds_b - seconds_a) / (epochs_b - epochs_a)


def affordable_epochs(budget_seconds: float, seconds_per_epoch: float) -> int:
    """The most whole epochs that fit ``budget_seconds`` (at least 1)."""
    if seconds_per_epoch <= 0:
        raise ValueError(f"seconds per epoch must be positive, got {seconds_per_epoch!r}")
    return max(1, int(budget_seconds // seconds_per_epoch))


def margins(evaluation: dict[str, Any], policies: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The best baseline (highest mean accuracy) of an ``evaluate --json`` record, and each policy's paired difference to it."""
    baselines = [condition for condition in evaluation["conditions"] if condition["baseline"]]
    if not baselines:
        raise ValueError("the evaluation has no baseline to compare with")
    best = max(baselines, key=lambda condition: condition["mean"])["name"]
    found = {(entry["condition"], entry["baseline"]): entry for entry in evaluation["comparisons"]}
    return best, [found[(policy, best)] for policy in policies]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", metavar="DIR", help="an image folder with DIR/train/ and DIR/test/")
    parser.add_argument("--output", metavar="OUT", help="where the policies and results go (default: DIR/comparison)")
    parser.add_argument(
        "--variant", action="append", metavar="NAME=FLAGS",
        help="a search to compare, as dada-search flags, optionally named (repeatable; default: "
        + "; ".join(DEFAULT_VARIANTS) + ")",
    )
    parser.add_argument("--model", default="wrn-10-1", help="network of the searches and evaluations (default wrn-10-1)")
    parser.add_argument("--image-size", type=int, default=16, help="image side (default 16)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--lr", type=float, help="SGD learning rate (default: the imagefolder default)")
    parser.add_argument("--cutout", type=int, default=0, help="Cutout side, 0 for none (default 0)")
    parser.add_argument("--no-flip", action="store_true", help="no horizontal flip in the evaluations (digits)")
    parser.add_argument("--epochs", type=int, default=200, help="training epochs of each evaluation run (default 200)")
    parser.add_argument("--seeds", type=int, default=5, help="paired evaluation seeds (default 5)")
    parser.add_argument("--baselines", default=",".join(DEFAULT_BASELINES), help="evaluate's --baselines (default: %(default)s)")
    parser.add_argument("--search-seed", type=int, default=0, help="dada-search --seed of every search (default 0)")
    parser.add_argument("--search-fraction", type=float, default=0.25, help="a search's cost over one run's (default 0.25)")
    parser.add_argument(
        "--search-epochs", metavar="N[,N...]",
        help="search epochs, one for all variants or one per variant: skips the timing (the numbers then repeat exactly)",
    )
    return parser


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[Variant], list[str], list[int] | None]:
    try:
        variants = [parse_variant(text) for text in (args.variant or DEFAULT_VARIANTS)]
    except ValueError as error:
        parser.error(str(error))
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        parser.error(f"variant names must be distinct, got {', '.join(names)}")
    taken = sorted(set(names) & set(KNOWN_BASELINES))
    if taken:
        parser.error(f"variant name {taken[0]!r} is a baseline's: name the variant, e.g. --variant 'paper=--method published'")
    baselines = [name.strip() for name in args.baselines.split(",") if name.strip()]
    unknown = sorted(set(baselines) - set(KNOWN_BASELINES))
    if unknown or not baselines:
        parser.error(f"--baselines must name some of {', '.join(KNOWN_BASELINES)}, got {args.baselines!r}")
    if args.epochs < 2 or args.seeds < 2:
        parser.error(f"--epochs and --seeds must be at least 2, got {args.epochs} and {args.seeds}")
    if not 0 < args.search_fraction <= 1:
        parser.error(f"--search-fraction must be in (0, 1], got {args.search_fraction}")
    epochs = None
    if args.search_epochs is not None:
        try:
            epochs = [int(value) for value in args.search_epochs.split(",")]
        except ValueError:
            parser.error(f"--search-epochs must be whole numbers separated by commas, got {args.search_epochs!r}")
        if len(epochs) == 1:
            epochs *= len(variants)
        if len(epochs) != len(variants) or min(epochs) < 1:
            parser.error(f"--search-epochs needs one positive number or one per variant ({len(variants)}), got {args.search_epochs!r}")
    for part in ("train", "test"):
        if not (Path(args.data) / part).is_dir():
            parser.error(f"{args.data!r} has no {part}/ folder: write one with bench/digits_demo.py or bench/photo_patches.py")
    return variants, baselines, epochs


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    variants, baselines, fixed_epochs = _checked(parser, args)
    output = Path(args.output or Path(args.data) / "comparison")
    output.mkdir(parents=True, exist_ok=True)
    policies = output / "policies"

    timing = output / "timing"
    run_seconds = None
    if fixed_epochs is None:
        run_times = [
            (epochs, run(evaluate_command(args, [], ["no-policy"], epochs, 1, None))) for epochs in (1, args.epochs)
        ]
        run_seconds = per_epoch(*run_times) * args.epochs
        print(f"one evaluation training run ({args.epochs} epochs, no policy): {run_seconds:.1f} s without start-up", flush=True)

    records = []
    for index, variant in enumerate(variants):
        if fixed_epochs is None:
            calibration = [(epochs, run(search_command(args, variant, epochs, timing))) for epochs in CALIBRATION_EPOCHS]
            epoch_seconds = per_epoch(*calibration)
            epochs = affordable_epochs(args.search_fraction * run_seconds, epoch_seconds)
        else:
            epochs = fixed_epochs[index]
        wall = run(search_command(args, variant, epochs, policies))
        record = {"name": variant.name, "flags": list(variant.flags), "epochs": epochs, "wall_seconds": wall,
                  "command": shlex.join(search_command(args, variant, epochs, policies))}
        if fixed_epochs is None:
            record["seconds_without_start_up"] = epoch_seconds * epochs
            record["ratio_to_run"] = record["seconds_without_start_up"] / run_seconds
            print(
                f"{variant.name}: {epochs} search epochs, {record['seconds_without_start_up']:.1f} s without start-up "
                f"({wall:.1f} s wall) = {record['ratio_to_run']:.2f} of one evaluation run ({run_seconds:.1f} s)"
                + (" - OVER the budget: a search runs at least one epoch" if record["ratio_to_run"] > args.search_fraction else ""),
                flush=True,
            )
        records.append(record)

    evaluation_path = output / "evaluation.json"
    searched = [policies / f"{variant.name}.json" for variant in variants]
    command = evaluate_command(args, searched, baselines, args.epochs, args.seeds, evaluation_path)
    run(command)
    evaluation = json.loads(evaluation_path.read_text())
    best, rows = margins(evaluation, [variant.name for variant in variants])
    print(f"\neach searched policy minus the best baseline ({best}), points, 95% paired interval over {args.seeds} seeds:")
    for row in rows:
        low, high = row["interval"]
        print(f"  {row['condition']:<24} {100 * row['mean']:+6.2f}  [{100 * low:+.2f}, {100 * high:+.2f}]  {row['verdict']}")
    summary = {
        "data": args.data, "evaluation_run_seconds": run_seconds, "search_fraction": args.search_fraction,
        "searches": records, "evaluate_command": shlex.join(command), "evaluation": str(evaluation_path),
        "best_baseline": best, "margins": rows,
    }
    temporary = output / "comparison.json.tmp"
    temporary.write_text(json.dumps(summary, indent=2))
    temporary.replace(output / "comparison.json")
    print(f"wrote {output / 'comparison.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
