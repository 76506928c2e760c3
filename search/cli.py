"""``dada-search``: the command line of :func:`dada_transforms.search.loop.search`."""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Sequence

from dada_transforms import __version__

from .output_files import OutputPaths, check_output, output_paths
from .settings import (
    BAD_IMAGES,
    DATA_PATHS,
    DATASETS,
    ESTIMATORS,
    EXPORTS,
    MAGNITUDE_GRADIENTS,
    METHODS,
    OBJECTIVES,
    SAMPLING_MODES,
    VALIDATION_BATCHES,
    SearchInputError,
    check_data_options,
    resolve_settings,
)

_EPILOG = """\
Defaults of --model, --image-size, --batch-size, --lr, --weight-decay and --cutout
follow the published settings of the dataset (cifar10 row for imagefolder).
Example: dada-search --dataset reduced-cifar10 --download --name my-cifar10
then DADA("my-cifar10") or timm's --aa dada-my-cifar10.

On many GPUs or machines, run it under torchrun (one process per GPU); --batch-size
is then the global batch, shared equally by the processes:
  torchrun --nproc-per-node 8 -m dada_transforms.search --dataset reduced-imagenet ...
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dada-search``."""
    parser = argparse.ArgumentParser(
        prog="dada-search",
        description="Search a DADA augmentation policy (Li et al., ECCV 2020) and save it as a preset.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dada-search (dada-transforms) {__version__}")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, choices=DATASETS, help="what to search on")
    data.add_argument("--data-dir", metavar="DIR", help="dataset folder (default ./data; the image tree for imagefolder)")
    data.add_argument("--download", action="store_true", help="download a torchvision dataset into --data-dir")
    data.add_argument("--bad-images", choices=BAD_IMAGES, default="fail", help="an unreadable image file stops the search with its name (fail, default) or is left out (skip)")
    data.add_argument("--data-path", choices=DATA_PATHS, default="auto", help="images held in memory on the device (fastest), streamed from the files by DataLoader workers (bounded host memory; imagenet and imagefolder), or auto (default: stream when the decoded images would not fit comfortably in memory)")
    data.add_argument("--workers", type=int, metavar="N", help="decoding processes per search process when streaming (default: the CPUs shared among the processes, at most 8)")
    data.add_argument("--image-size", type=int, metavar="N", help="side of the square images searched on (default 32; 224 for ImageNet)")
    model = parser.add_argument_group("training")
    model.add_argument("--model", metavar="NAME", help="wrn-DEPTH-WIDTH (e.g. wrn-40-2) or a timm model name (default per dataset)")
    model.add_argument("--epochs", type=int, metavar="N", default=20, help="search epochs (default 20)")
    model.add_argument("--batch-size", type=int, metavar="N", help="images per step (default per dataset)")
    model.add_argument("--lr", type=float, metavar="LR", help="SGD learning rate of the network, cosine-annealed (default per dataset)")
    model.add_argument("--lr-min", type=float, metavar="LR", help="learning rate reached by the cosine schedule (default 0.001, as published, or --lr if smaller)")
    model.add_argument("--weight-decay", type=float, metavar="WD", help="SGD weight decay (default per dataset)")
    model.add_argument("--cutout", type=int, metavar="PX", help="Cutout side in pixels after the policy (default 16)")
    model.add_argument("--device", metavar="DEVICE", help="cuda, cuda:N or cpu (default cuda when available)")
    model.add_argument("--seed", type=int, metavar="N", default=0, help="random seed (default 0)")
    model.add_argument("--sync-bn", action="store_true", help="under torchrun: BatchNorm statistics of the global batch (SyncBatchNorm) instead of each process's share")
    model.add_argument("--timeout", type=float, metavar="SECONDS", default=600.0, help="under torchrun: how long a collective waits for the other processes before the job fails (default 600)")
    policy = parser.add_argument_group("augmentation search")
    policy.add_argument("--method", choices=METHODS, default="published", help="published (default): the paper's search of 105 operation pairs, every option below but --draws, --operations and --objective; compact (ours): one weight and one magnitude per operation and one probability, --operations of them per image, --draws draws per image scored against a leave-one-out baseline, magnitude gradients through the operations where they have one")
    policy.add_argument("--draws", type=int, metavar="K", default=4, help="compact: draws of the augmentation per image, each scored against the mean of the others (default 4, at least 2)")
    policy.add_argument("--operations", type=int, metavar="N", default=2, help="compact: operations applied to each image (default 2)")
    policy.add_argument("--objective", choices=OBJECTIVES, default="unrolled", help="compact: what a draw is scored by: unrolled (default): the validation loss after one unrolled training step, as the paper; adversarial: the network's loss on the augmented image against that of a slowly averaged copy of the network (augmentation the network finds hard but its average still recognises)")
    policy.add_argument("--arch-lr", type=float, metavar="LR", default=0.005, help="Adam learning rate of the policy parameters (default 0.005)")
    policy.add_argument("--temperature", type=float, metavar="TAU", default=0.5, help="relaxation temperature (default 0.5)")
    policy.add_argument("--sampling", choices=SAMPLING_MODES, default="per-batch", help="one policy draw per batch (the paper's) or per image")
    policy.add_argument("--magnitude-grad", choices=MAGNITUDE_GRADIENTS, default="straight-through", help="magnitude gradient estimator (default straight-through)")
    policy.add_argument("--hypergradient-xi", action="store_true", help="multiply the hypergradient by the learning rate, as in DARTS (off in the published code)")
    policy.add_argument("--estimator", choices=ESTIMATORS, default="baseline", help="gradient estimator of the weights and probabilities: baseline (default, lowest total variance measured), relax (trained control variate), score-function (c = 0: the authors' effective estimator)")
    policy.add_argument("--val-batches", choices=VALIDATION_BATCHES, default="fresh", help="un-augmented validation batch: a fresh one each step (default) or always the first (the authors' code)")
    output = parser.add_argument_group("output")
    output.add_argument("--name", required=True, metavar="PRESET", help="preset name: writes DIR/PRESET.json and DIR/PRESET.safetensors")
    output.add_argument("--output", metavar="DIR", help="output folder (default: the user preset directory, so DADA(PRESET) finds it)")
    output.add_argument("--top-k", type=int, metavar="K", help="sub-policies kept in the policy (default: 25 of the 105 for published; all 15^N N-tuples of operations for compact)")
    output.add_argument("--export", choices=EXPORTS, help="top-k: the kept sub-policies chosen uniformly (the paper's; default for published); weighted: chosen with their learned weights, renormalised over the kept ones (ours; default for compact, which with every tuple kept is exactly the learned distribution)")
    again = output.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from DIR/PRESET.checkpoint/ if it exists")
    again.add_argument("--overwrite", action="store_true", help="discard DIR/PRESET.checkpoint/ of an interrupted search and start afresh")
    output.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the result to this Hugging Face Hub repository")
    output.add_argument("--no-progress", action="store_true", help="no progress bar and no per-epoch log lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dada-search``; returns the exit status (2 for a user error, 130 when interrupted).

    Arguments, settings and the output folder are checked before the search's
    heavy modules are imported and before any data is loaded.
    """
    paths = None
    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"  # torchrun's process number
    searching = False  # errors before the search are the same on every process: rank 0 reports them
    try:
        args = build_parser().parse_args(argv)
        settings_arguments = {
            name: getattr(args, name) for name in inspect.signature(resolve_settings).parameters if name != "dataset"
        }
        resolve_settings(args.dataset, **settings_arguments)
        check_data_options(args.dataset, args.data_path, args.workers)
        if rank == "0":  # only rank 0 writes the output
            paths = _checked_output(args.output, args.name)
        from .loop import search

        searching = True

        result = search(
            args.dataset,
            **settings_arguments,
            name=args.name,
            output=args.output,
            data_dir=args.data_dir,
            download=args.download,
            bad_images=args.bad_images,
            data_path=args.data_path,
            workers=args.workers,
            device=args.device,
            timeout=args.timeout,
            resume=args.resume,
            overwrite=args.overwrite,
            push_to_hub=args.push_to_hub,
            progress=not args.no_progress,
        )
    except SearchInputError as error:
        own = searching and type(error).__name__ != "AgreedError"  # an AgreedError is raised on every process alike
        if rank == "0" or own:
            print(f"dada-search: error{f' (rank {rank})' if rank != '0' else ''}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dada-search: interrupted{_resume_hint(paths)}", file=sys.stderr)
        return 130
    except RuntimeError as error:
        from .distributed import lost_other_process

        if not (searching and "WORLD_SIZE" in os.environ and lost_other_process(error)):
            raise
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        print(
            f"dada-search: stopped (rank {rank}): another process of this job failed or stalled (its own message "
            f"says why); {reason}{_resume_hint(paths)}",
            file=sys.stderr,
        )
        return 1
    if rank == "0":
        print(result.paths.policy)
    return 0


def _checked_output(output: str | None, name: str) -> OutputPaths:
    if output is None:
        from dada_transforms.presets import user_preset_dir

        output = user_preset_dir()
    paths = output_paths(output, name)
    check_output(paths, name)
    return paths


def _resume_hint(paths: OutputPaths | None) -> str:
    if paths is None or not paths.checkpoint.is_dir():
        return ""
    from .checkpoint import saved_epoch

    epoch = saved_epoch(paths.checkpoint)
    if epoch is None:
        return ""
    return f"; run it again with --resume to continue after epoch {epoch}"


if __name__ == "__main__":
    sys.exit(main())
