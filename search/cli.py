"""``dada-search``: the command line of :func:`dada_transforms.search.loop.search`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .settings import DATASETS, MAGNITUDE_GRADIENTS, SAMPLING_MODES, SearchInputError

_EPILOG = """\
Defaults of --model, --image-size, --batch-size, --lr, --weight-decay and --cutout
follow the published settings of the dataset (cifar10 row for imagefolder).
Example: dada-search --dataset reduced-cifar10 --download --name my-cifar10
then DADA("my-cifar10") or timm's --aa dada-my-cifar10.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dada-search``."""
    parser = argparse.ArgumentParser(
        prog="dada-search",
        description="Search a DADA augmentation policy (Li et al., ECCV 2020) and save it as a preset.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, choices=DATASETS, help="what to search on")
    data.add_argument("--data-dir", metavar="DIR", help="dataset folder (default ./data; the image tree for imagefolder)")
    data.add_argument("--download", action="store_true", help="download a torchvision dataset into --data-dir")
    data.add_argument("--image-size", type=int, metavar="N", help="side of the square images searched on (default 32; 224 for ImageNet)")
    model = parser.add_argument_group("training")
    model.add_argument("--model", metavar="NAME", help="wrn-DEPTH-WIDTH (e.g. wrn-40-2) or a timm model name (default per dataset)")
    model.add_argument("--epochs", type=int, metavar="N", default=20, help="search epochs (default 20)")
    model.add_argument("--batch-size", type=int, metavar="N", help="images per step (default per dataset)")
    model.add_argument("--lr", type=float, metavar="LR", help="SGD learning rate of the network, cosine-annealed (default per dataset)")
    model.add_argument("--weight-decay", type=float, metavar="WD", help="SGD weight decay (default per dataset)")
    model.add_argument("--cutout", type=int, metavar="PX", help="Cutout side in pixels after the policy (default 16)")
    model.add_argument("--device", metavar="DEVICE", help="cuda, cuda:N or cpu (default cuda when available)")
    model.add_argument("--seed", type=int, metavar="N", default=0, help="random seed (default 0)")
    policy = parser.add_argument_group("augmentation search")
    policy.add_argument("--arch-lr", type=float, metavar="LR", default=0.005, help="Adam learning rate of the policy parameters (default 0.005)")
    policy.add_argument("--temperature", type=float, metavar="TAU", default=0.5, help="relaxation temperature (default 0.5)")
    policy.add_argument("--sampling", choices=SAMPLING_MODES, default="per-batch", help="one policy draw per batch (the paper's) or per image")
    policy.add_argument("--magnitude-grad", choices=MAGNITUDE_GRADIENTS, default="straight-through", help="magnitude gradient estimator (default straight-through)")
    policy.add_argument("--hypergradient-xi", action="store_true", help="multiply the hypergradient by the learning rate, as in DARTS (off in the published code)")
    output = parser.add_argument_group("output")
    output.add_argument("--name", required=True, metavar="PRESET", help="preset name: writes DIR/PRESET.json and DIR/PRESET.safetensors")
    output.add_argument("--output", metavar="DIR", help="output folder (default: the user preset directory, so DADA(PRESET) finds it)")
    output.add_argument("--top-k", type=int, metavar="K", default=25, help="sub-policies kept in the policy (default 25)")
    output.add_argument("--resume", action="store_true", help="continue from DIR/PRESET.checkpoint/ if it exists")
    output.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the result to this Hugging Face Hub repository")
    output.add_argument("--no-progress", action="store_true", help="no progress bar and no per-epoch log lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dada-search``; returns the exit status (2 for a user error, 130 when interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .loop import search

    try:
        result = search(
            args.dataset,
            name=args.name,
            output=args.output,
            data_dir=args.data_dir,
            download=args.download,
            model=args.model,
            image_size=args.image_size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            arch_lr=args.arch_lr,
            temperature=args.temperature,
            top_k=args.top_k,
            cutout=args.cutout,
            seed=args.seed,
            sampling=args.sampling,
            magnitude_grad=args.magnitude_grad,
            hypergradient_xi=args.hypergradient_xi,
            device=args.device,
            resume=args.resume,
            push_to_hub=args.push_to_hub,
            progress=not args.no_progress,
        )
    except SearchInputError as error:
        print(f"dada-search: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dada-search: interrupted; run the same command with --resume to continue", file=sys.stderr)
        return 130
    print(result.paths.policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
