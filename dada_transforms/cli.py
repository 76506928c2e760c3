"""The ``dada-transforms`` command: list, show, grid and push presets."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from . import __version__
from .atomic import write_atomic
from .grid import make_grid
from .policy_table import text_table
from .presets import HUB_PREFIX, PRESET_DIR_VARIABLE, load_policy, preset_infos, user_preset_dir

PROGRAM = "dada-transforms"
_EXAMPLES = f"""examples:
  {PROGRAM} list
  {PROGRAM} show imagenet
  {PROGRAM} grid imagenet -o grid.png
  {PROGRAM} grid cifar10 photo.jpg -o grid.png --samples 7 --seed 1
  {PROGRAM} push my-preset my-org/my-preset

PRESET is a built-in or user preset name, a policy .json file, or {HUB_PREFIX}org/name[@revision]."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Show, picture and share DADA data augmentation policies.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROGRAM} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("list", help="the presets that load by name, and where each comes from")

    show = commands.add_parser("show", help="a policy as a table, magnitudes mapped to real arguments")
    show.add_argument("preset", metavar="PRESET")

    grid = commands.add_parser("grid", help="a PNG of augmented samples of an image")
    grid.add_argument("preset", metavar="PRESET")
    grid.add_argument("image", metavar="IMAGE", nargs="?", help="the image to augment (default: a demo photo of a cat)")
    grid.add_argument("-o", "--output", metavar="OUT.png", default="grid.png", help="where to write (default: grid.png)")
    grid.add_argument("--samples", type=int, default=15, help="augmented samples besides the original (default: 15)")
    grid.add_argument("--columns", type=int, default=4, help="tiles per row (default: 4)")
    grid.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same picture (default: 0)")
    grid.add_argument("--tile-size", type=int, default=160, help="tile side in pixels (default: 160)")

    push = commands.add_parser("push", help="upload a preset to the Hugging Face Hub with a generated model card")
    push.add_argument("preset", metavar="PRESET")
    push.add_argument("repo_id", metavar="ORG/NAME")
    push.add_argument(
        "--parameters",
        metavar="FILE.safetensors",
        help="learned tensors to upload as policy.safetensors (default: PRESET's sibling .safetensors file, if any)",
    )
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--token", help="Hugging Face token (default: the logged-in one, or HF_TOKEN)")
    return parser


def _list() -> None:
    infos = preset_infos()
    width = max([len("NAME")] + [len(info.name) for info in infos])
    print(f"{'NAME'.ljust(width)}  {'SOURCE'.ljust(8)}  LOCATION")
    for info in infos:
        print(f"{info.name.ljust(width)}  {info.source.ljust(8)}  {info.location}")
    print(f"\nuser preset directory: {user_preset_dir()} (set {PRESET_DIR_VARIABLE} to change it)")
    print(f"Hub presets: {HUB_PREFIX}org/name[@revision]")


def _show(spec: str) -> None:
    policy = load_policy(spec)
    sizes = sorted({len(sub_policy) for sub_policy in policy})
    print(f"{policy.name or spec}: {len(policy)} sub-policies of {' or '.join(map(str, sizes))} operations")
    if policy.description:
        print(policy.description)
    print("Per image one sub-policy is chosen uniformly; each operation is applied with its probability.")
    print("+/- marks mirrored operations: the argument's sign is random.\n")
    print(text_table(policy))


def _image_format(output: Path) -> str:
    extension = output.suffix.lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format not in ("PNG", "JPEG", "WEBP"):
        raise ValueError(f"the output must be a .png, .jpg or .webp file, got {str(output)!r}")
    return image_format


def _grid(args: argparse.Namespace) -> None:
    output = Path(args.output)
    image_format = _image_format(output)
    picture = make_grid(
        load_policy(args.preset), args.image, samples=args.samples, columns=args.columns, seed=args.seed, tile_size=args.tile_size
    )
    try:
        write_atomic(output, lambda path: picture.save(path, format=image_format, optimize=True))
    except OSError as error:
        raise ValueError(f"cannot write {str(output)!r}: {error.strerror or error}") from None
    print(f"wrote {output} ({picture.width}x{picture.height} px: the original and {args.samples} samples)")


def _preset_file(spec: str) -> Path | None:
    """The JSON file a preset name or path stands for (None for Hub presets)."""
    for info in preset_infos():
        if info.name == spec:
            return Path(info.location)
    path = Path(spec).expanduser()
    return path if path.is_file() else None


def _push(args: argparse.Namespace) -> None:
    from .hub import push_preset  # imports huggingface_hub, which the other commands do not need

    parameters = args.parameters
    if parameters is None:
        source = _preset_file(args.preset)
        sibling = source.with_suffix(".safetensors") if source is not None else None
        parameters = sibling if sibling is not None and sibling.is_file() else None
    url = push_preset(load_policy(args.preset), args.repo_id, safetensors_path=parameters, token=args.token, private=args.private)
    uploaded = "policy.json, policy.safetensors and README.md" if parameters else "policy.json and README.md"
    print(f"pushed {uploaded} to {url}")
    print(f'use it with DADA("{HUB_PREFIX}{args.repo_id}") or --aa dada-{HUB_PREFIX}{args.repo_id}')


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for user errors, printed without a traceback)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            _list()
        elif args.command == "show":
            _show(args.preset)
        elif args.command == "grid":
            _grid(args)
        else:
            _push(args)
    except ValueError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
