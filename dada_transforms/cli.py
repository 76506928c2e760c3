"""The ``dada-transforms`` command: list, show, grid and push presets."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .atomic import write_atomic
from .policy_table import compact_text_table, printable, text_table
from .presets import HUB_PREFIX, PRESET_DIR_VARIABLE, expand_user, load_policy, preset_files, preset_infos, user_preset_dir

PROGRAM = "dada-transforms"
_EXAMPLES = f"""examples:
  {PROGRAM} list
  {PROGRAM} show imagenet
  {PROGRAM} grid imagenet -o grid.png
  {PROGRAM} grid cifar10 photo.jpg -o grid.png --samples 7 --seed 1
  {PROGRAM} grid imagenet photo.jpg --boxes 40,30,200,180 --mask mask.png -o boxes.png
  {PROGRAM} push my-preset my-org/my-preset
  {PROGRAM} evaluate my-preset --dataset imagefolder --data-dir images --test-dir held-out --epochs 20 --seeds 3
  {PROGRAM} plot my-preset -o search.png

PRESET is a built-in or user preset name, a policy .json file, or {HUB_PREFIX}org/name[@revision]."""
_PRESET_HELP = f"a preset name (see `{PROGRAM} list`), a policy .json file, or {HUB_PREFIX}org/name[@revision]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Show, picture and share DADA data augmentation policies.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROGRAM} {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (`COMMAND --help` for its options)"
    )

    commands.add_parser("list", help="the presets that load by name, and where each comes from")

    show = commands.add_parser("show", help="a policy as a table, magnitudes mapped to real arguments")
    show.add_argument("preset", metavar="PRESET", help=f"the policy to show: {_PRESET_HELP}")

    grid = commands.add_parser("grid", help="a PNG of augmented samples of an image")
    grid.add_argument("preset", metavar="PRESET", help=f"the policy to apply: {_PRESET_HELP}")
    grid.add_argument("image", metavar="IMAGE", nargs="?", help="the image to augment (default: a demo photo of a cat)")
    grid.add_argument("-o", "--output", metavar="OUT.png", default="grid.png", help="where to write (default: grid.png)")
    grid.add_argument("--samples", type=int, default=15, help="augmented samples besides the original (default: 15)")
    grid.add_argument("--columns", type=int, default=4, help="tiles per row (default: 4)")
    grid.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same picture (default: 0)")
    grid.add_argument("--tile-size", type=int, default=160, help="tile side in pixels (default: 160)")
    grid.add_argument(
        "--boxes", action="append", metavar="X1,Y1,X2,Y2",
        help="a box in IMAGE's pixels, drawn moved on every tile (repeat for more boxes)",
    )
    grid.add_argument("--mask", metavar="MASK.png", help="a mask of IMAGE's size (non-zero inside), its outline drawn moved")

    push = commands.add_parser("push", help="upload a preset to the Hugging Face Hub with a generated model card")
    push.add_argument("preset", metavar="PRESET", help=f"the policy to upload: {_PRESET_HELP}")
    push.add_argument("repo_id", metavar="ORG/NAME", help="the Hub repository to upload to (created if needed)")
    push.add_argument(
        "--parameters",
        metavar="FILE.safetensors",
        help="learned tensors to upload as policy.safetensors (default: PRESET's sibling .safetensors file, if any)",
    )
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--token", help="Hugging Face token (default: the logged-in one, or HF_TOKEN)")
    _add_evaluate_and_plot(commands)
    return parser


def _add_evaluate_and_plot(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="is a policy better? train the same network with each policy and with baselines, score held-out images",
        description="Train the same network once per policy and per seed (and with the baselines: no policy, the "
        "search's starting point, a random policy of the same size, the closest published DADA policy, torchvision's "
        "RandAugment, AutoAugment and TrivialAugmentWide), score it on held-out images, and print each policy's "
        "paired difference to each baseline (the same seed: the same initial network, data order, crops, flips and "
        "Cutout), its mean, a 95% paired t interval over the seeds and a verdict: better, worse or cannot tell. "
        "The chart draws every condition's difference to no-policy with its interval.",
    )
    evaluate.add_argument("policies", metavar="POLICY", nargs="*", help=f"policies to evaluate: {_PRESET_HELP}")
    evaluate.add_argument(
        "--dataset", required=True, metavar="DATASET",
        help="what to train on, as dada-search's --dataset (e.g. reduced-cifar10, imagefolder); scored on its test split",
    )
    evaluate.add_argument("--data-dir", metavar="DIR", help="dataset folder (default ./data; the image tree for imagefolder)")
    evaluate.add_argument("--download", action="store_true", help="download a torchvision dataset into --data-dir")
    evaluate.add_argument("--test-dir", metavar="DIR", help="imagefolder: a DIR/CLASS/IMAGE tree of held-out images (same classes)")
    evaluate.add_argument("--holdout", type=float, default=0.2, metavar="F", help="imagefolder without --test-dir: the fraction held out, stratified (default 0.2)")
    evaluate.add_argument("--model", metavar="NAME", help="wrn-DEPTH-WIDTH or a timm model name (default: the dataset's search model)")
    evaluate.add_argument("--image-size", type=int, metavar="N", help="image side (default 32; 224 for ImageNet)")
    evaluate.add_argument("--epochs", type=int, default=20, metavar="N", help="training epochs per run (default 20)")
    evaluate.add_argument(
        "--seeds", type=int, default=5, metavar="S",
        help="runs per condition, seeds 0..S-1 (default 5; at least 2 for an interval)",
    )
    evaluate.add_argument("--batch-size", type=int, metavar="N", help="images per step (default: the dataset's search default)")
    evaluate.add_argument("--lr", type=float, metavar="LR", help="SGD learning rate, cosine-annealed (default: the dataset's search default)")
    evaluate.add_argument("--weight-decay", type=float, metavar="WD", help="SGD weight decay (default: the dataset's search default)")
    evaluate.add_argument("--cutout", type=int, metavar="PX", help="Cutout side after the policy, 0 for none (default 16)")
    evaluate.add_argument("--no-flip", action="store_true", help="no random horizontal flip (for images such as digits)")
    evaluate.add_argument(
        "--baselines", default="no-policy,initial,random,published,randaugment,autoaugment,trivialaugment", metavar="LIST",
        help="comma-separated baselines, '' for none: no-policy (crop, flip and Cutout only), initial (the search's "
        "start: all 105 sub-policies at p = m = 0.5), random (random p and m, new per seed), published (the closest "
        "published DADA preset), randaugment, autoaugment, trivialaugment (torchvision's) (default: all of them); "
        "compact-initial (the --method compact search's start) only when named",
    )
    evaluate.add_argument("--device", metavar="DEVICE", help="cuda, cuda:N or cpu (default cuda when available)")
    evaluate.add_argument(
        "-o", "--output", metavar="OUT.png", default="evaluation.png",
        help="the chart of the differences to no-policy with their intervals (default: evaluation.png)",
    )
    evaluate.add_argument("--no-chart", action="store_true", help="no chart (matplotlib not needed)")
    evaluate.add_argument("--json", metavar="FILE.json", help="also write the settings, accuracies and paired differences as JSON")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar and no per-run log lines")

    plot = commands.add_parser(
        "plot",
        help="a PNG of what a search learned, epoch by epoch, or of an evaluation's paired differences",
        description="Draw a dada-search result's per-epoch history: the final top sub-policies' weights over the "
        "epochs, the spread of the probabilities and magnitudes against their 0.5 start (and the result's noise band, "
        "when it records one), the loss and accuracy; for a result of --method compact, every operation's weight, the "
        "probability and every operation's magnitude against their start and noise band. Given the JSON that `evaluate --json` wrote, draw each "
        "condition's paired difference to no-policy with its 95% interval instead.",
    )
    plot.add_argument(
        "result", metavar="RESULT",
        help="a dada-search result (a preset name, PRESET.json or PRESET.safetensors) or an `evaluate --json` file",
    )
    plot.add_argument("-o", "--output", metavar="OUT.png", default="search.png", help="where to write (default: search.png)")
    plot.add_argument("--top", type=int, default=8, metavar="K", help="sub-policies whose weights are drawn (default 8; a compact result draws all 15 operations)")


def _list() -> None:
    files = preset_files()
    infos = [info for info in files if info.problem is None]
    width = max([len("NAME")] + [len(printable(info.name)) for info in infos])
    print(f"{'NAME'.ljust(width)}  {'SOURCE'.ljust(8)}  LOCATION")
    for info in infos:
        print(f"{printable(info.name).ljust(width)}  {info.source.ljust(8)}  {printable(info.location)}")
    unusable = [info for info in files if info.problem is not None]
    if unusable:
        print("\nuser preset files that do not load by name:")
        for info in unusable:
            print(f"  {printable(info.problem)}")
    print(f"\nuser preset directory: {printable(str(user_preset_dir()))} (set {PRESET_DIR_VARIABLE} to change it)")
    print(f"Hub presets: {HUB_PREFIX}org/name[@revision]")


def _show(spec: str) -> None:
    policy = load_policy(spec)
    sizes = sorted({len(sub_policy) for sub_policy in policy})
    title = printable(policy.name or spec)  # names and descriptions may come from anywhere: no terminal escapes
    print(f"{title}: {len(policy)} sub-policies of {' or '.join(map(str, sizes))} operations")
    if policy.description:
        print(printable(policy.description))
    if policy.sampling_weights is None:
        print("Per image one sub-policy is chosen uniformly; each operation is applied with its probability.")
    else:
        print("Per image one sub-policy is chosen with the probability in 'chosen with' (its sampling weight);")
        print("each operation is applied with its probability.")
    print("+/- marks mirrored operations: the argument's sign is random.\n")
    from .search.noise_band import outside_counts, outside_line, result_method  # a search's result says how far it moved

    method = result_method(policy.metadata)
    if method == "compact":
        print("Searched by the compact method: each slot draws an operation with its weight and applies it with")
        print("the probability p at the operation's magnitude m (mirrored operations: m is the strength, 0 = identity).")
        print(f"{compact_text_table(policy)}\n\nThe policy file's {len(policy)} sub-policies (ordered tuples of operations):")
    print(text_table(policy))
    counts = outside_counts(policy.metadata)
    if counts is not None:
        print(f"\nSearched: {outside_line(counts, method)}")


def _image_format(output: Path) -> str:
    from PIL import Image

    extension = output.suffix.lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format not in ("PNG", "JPEG", "WEBP"):
        raise ValueError(f"the output must be a .png, .jpg or .webp file, got {str(output)!r}")
    return image_format


def _grid(args: argparse.Namespace) -> None:
    from .grid import make_grid  # imports torch, which list and show do not need

    output = expand_user(args.output)
    image_format = _image_format(output)
    picture = make_grid(
        load_policy(args.preset), args.image and expand_user(args.image), samples=args.samples, columns=args.columns, seed=args.seed, tile_size=args.tile_size,
        boxes=args.boxes and [_box(text) for text in args.boxes], mask=args.mask and expand_user(args.mask),
    )
    try:
        write_atomic(output, lambda path: picture.save(path, format=image_format, optimize=True))
    except OSError as error:
        raise ValueError(f"cannot write {str(output)!r}: {error.strerror or error}") from None
    print(f"wrote {output} ({picture.width}x{picture.height} px: the original and {args.samples} samples)")


def _box(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(value) for value in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"--boxes takes four numbers X1,Y1,X2,Y2, got {text!r}")
    return values


def _preset_file(spec: str) -> Path | None:
    """The JSON file a preset name or path stands for (None for Hub presets)."""
    for info in preset_infos():
        if info.name == spec:
            return Path(info.location)
    path = expand_user(spec)
    try:
        return path if path.is_file() else None
    except OSError:  # e.g. a name too long to be a file; loading the preset reports it
        return None


def _push(args: argparse.Namespace) -> None:
    from .hub import push_preset  # imports huggingface_hub, which the other commands do not need

    parameters = args.parameters
    if parameters is None:
        source = _preset_file(args.preset)
        sibling = source.with_suffix(".safetensors") if source is not None else None
        parameters = sibling if sibling is not None and sibling.is_file() else None
    url = push_preset(args.preset, args.repo_id, safetensors_path=parameters, token=args.token, private=args.private)
    uploaded = "policy.json, policy.safetensors and README.md" if parameters else "policy.json and README.md"
    print(f"pushed {uploaded} to {url}")
    print(f'use it with DADA("{HUB_PREFIX}{args.repo_id}") or --aa dada-{HUB_PREFIX}{args.repo_id}')


def _evaluate(args: argparse.Namespace) -> None:
    if not args.no_chart:
        from .plot import require_matplotlib

        require_matplotlib()
        _png_output(args.output)
    if args.json is not None:
        if Path(args.json).suffix.lower() != ".json":
            raise ValueError(f"--json must name a .json file, got {args.json!r}")
        _check_writable(args.json)
    from .search.evaluate import evaluate

    baselines = [name.strip() for name in args.baselines.split(",") if name.strip()]
    result = evaluate(
        args.policies, args.dataset, data_dir=args.data_dir, download=args.download, test_dir=args.test_dir,
        holdout=args.holdout, model=args.model, image_size=args.image_size, epochs=args.epochs, seeds=args.seeds,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, cutout=args.cutout,
        flip=not args.no_flip, baselines=baselines, device=args.device, progress=not args.no_progress,
    )
    print(result.table())
    if args.json is not None:
        import json

        from .atomic import write_text_atomic

        try:
            write_text_atomic(Path(args.json), json.dumps(result.to_dict(), indent=1) + "\n")
        except OSError as error:
            raise ValueError(f"cannot write {args.json!r}: {error.strerror or error}") from None
        print(f"wrote {args.json}")
    if not args.no_chart:
        from .plot import evaluation_figure, save_png

        print(f"wrote {save_png(evaluation_figure(result), args.output)}")


def _plot(args: argparse.Namespace) -> None:
    from .plot import evaluation_figure, load_evaluation, load_search_history, require_matplotlib, save_png, search_figure

    require_matplotlib()
    _png_output(args.output)
    if not 1 <= args.top <= 105:
        raise ValueError(f"--top must be in [1, 105], got {args.top}")
    evaluation = load_evaluation(args.result)
    if evaluation is not None:
        output = save_png(evaluation_figure(evaluation), args.output)
        print(f"wrote {output} (the differences to {printable(evaluation.reference)} over {len(evaluation.seeds)} seeds)")
        return
    history = load_search_history(args.result)
    output = save_png(search_figure(history, top=args.top), args.output)
    print(f"wrote {output} ({len(history.loss)} epochs of {printable(history.name)})")


def _png_output(output: str) -> None:
    if Path(output).suffix.lower() != ".png":
        raise ValueError(f"the chart must be a .png file, got {output!r}")
    _check_writable(output)


def _check_writable(output: str) -> None:
    """Refuse, before any work, an output whose folder cannot be created or written."""
    folder = Path(output).expanduser().absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {output!r}: {str(folder)!r} is not a writable folder")


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
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "plot":
            _plot(args)
        else:
            _push(args)
    except ValueError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
