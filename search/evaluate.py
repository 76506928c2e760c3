"""Does a policy help? Train the same network once per policy, per baseline and per seed; score held-out images.

For one seed every condition starts from the same initial network and sees the
same images in the same order with the same crops, flips and Cutout squares:
only the augmentation differs (it draws from a generator of its own). So the
answer is paired: per seed, each policy's accuracy minus each baseline's, their
mean, a 95 % paired t interval over the seeds and a verdict, better / worse /
cannot tell (:mod:`dada_transforms.search.paired`).

The baselines (``BASELINES``) and what each measures:

- ``no-policy``: the shared crop, flip and Cutout only. Does any policy help?
- ``initial``: the search's starting point as a policy: all 105 sub-policies
  (every unordered pair of distinct operations) at p = m = 0.5, one chosen
  uniformly per image. What a search that learned nothing stands for: a
  searched policy that does not beat it shows no effect of the search. (At
  m = 0.5, 9 of the 15 operations are the identity: a mild policy.)
- ``random``: a random policy of the shape of the first evaluated policy (25
  sub-policies of 2 operations when none is given): distinct operations drawn
  uniformly, probabilities and magnitudes uniform in [0, 1], a new one per seed.
  A policy of the same form with random values, usually stronger than
  ``initial``: beating it partly measures strength, not the search.
- ``published``: the closest published DADA preset (``cifar100``, ``svhn`` or
  ``imagenet`` on those datasets and their reduced variants, ``cifar10`` on
  CIFAR-10 and image folders). Does a search on your data beat reusing one?
- ``randaugment``: torchvision's ``RandAugment`` (2 operations, magnitude 9),
- ``autoaugment``: torchvision's ``AutoAugment`` (its SVHN policy on SVHN, its
  ImageNet policy on ImageNet, its CIFAR-10 policy otherwise),
- ``trivialaugment``: torchvision's ``TrivialAugmentWide``: the strong fixed
  policies a searched one competes with.

and, only when named (``OPT_IN_BASELINES``):

- ``compact-initial``: the ``--method compact`` search's starting point: the 15
  operations equally likely, 2 per image, each applied with p = 0.5 at m = 0.5
  (mirrored operations at half strength: Rotate 15 degrees either way). A compact
  search that does not beat it shows no effect of the search.

The torchvision baselines draw per image (on a batch they would draw once for
all) from torch's global random generator, seeded per run; they run on the CPU
on uint8 images whatever the device (on a GPU: one copy of the batch to the host
and back per step, rather than a few dozen tiny kernel launches per image). The
DADA-style conditions run batched on the device.

Training follows the search's pipeline: RandomCrop (zero padding
``image_size // 8``), horizontal flip (unless ``flip=False``), the policy,
normalisation, Cutout; SGD with momentum 0.9, the cosine learning rate per step
down to 0, gradient clipping 5, and the dataset's search defaults for the model,
batch size, learning rate, weight decay, Cutout and image size. A run whose loss
or parameters stop being finite stops the evaluation with an error naming the
condition, the seed and the learning rate.

Held-out images: the test split of a torchvision dataset (CIFAR test, SVHN
test, ImageNet val; the 120 classes for reduced ImageNet); for an image folder,
the images of ``test_dir`` or else a stratified ``holdout`` fraction of the
folder (seed 0), the rest being trained on.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torchvision.transforms import v2
from tqdm import tqdm

from dada_transforms.ops import OPERATION_NAMES
from dada_transforms.policy import Policy
from dada_transforms.policy_table import printable
from dada_transforms.presets import load_policy
from dada_transforms.transform import DADA

from .batches import crop_and_flip
from .data import LabelledImages, check_image_folder, load_search_images, reduced_imagenet_classes
from .device_checks import check_model_fits, resolve_device
from .divergence import SearchDivergedError, check_loss, check_parameters
from .loop import _batch_sizes
from .models import build_model
from .paired import LEVEL, METHOD, ONE_SEED, PairedDifference, paired_difference, t_quantile_975
from .settings import SearchInputError, SearchSettings, resolve_settings
from .space import SUB_POLICIES
from .splits import stratified_split

BASELINES = ("no-policy", "initial", "random", "published", "randaugment", "autoaugment", "trivialaugment")
OPT_IN_BASELINES = ("compact-initial",)
"""Baselines evaluated only when named: ``compact-initial``, the compact search's starting point."""
KNOWN_BASELINES = BASELINES + OPT_IN_BASELINES
DEFAULT_SEEDS = 5
MAX_SEEDS = 100
_MOMENTUM = 0.9
_GRAD_CLIP = 5.0
_SCORE_BATCH = 512
_RANDOM_SHAPE = (2,) * 25  # the shape of a searched policy: 25 sub-policies of 2 operations

Augment = Callable[[torch.Tensor], torch.Tensor]  # uint8 [N, C, H, W] -> uint8 [N, C, H, W]


@dataclass(frozen=True)
class ConditionScores:
    """The held-out accuracies of one condition, one per seed."""

    name: str
    description: str
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float | None:
        """The sample standard deviation over seeds (None for a single seed)."""
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else None


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured. Conditions named as a baseline (``BASELINES``) are baselines, the others policies."""

    conditions: tuple[ConditionScores, ...]
    seeds: tuple[int, ...]
    setup: dict[str, Any]  # dataset, model, epochs, ..., train_images, test_images, device

    def _scores(self, name: str) -> tuple[float, ...]:
        return next(condition.accuracies for condition in self.conditions if condition.name == name)

    def comparisons(self) -> tuple[PairedDifference, ...]:
        """Each policy minus each baseline and each earlier policy; each other baseline minus ``no-policy``."""
        policies = [condition.name for condition in self.conditions if condition.name not in KNOWN_BASELINES]
        baselines = [condition.name for condition in self.conditions if condition.name in KNOWN_BASELINES]
        pairs = [(policy, other) for index, policy in enumerate(policies) for other in baselines + policies[:index]]
        if "no-policy" in baselines:
            pairs += [(baseline, "no-policy") for baseline in baselines if baseline != "no-policy"]
        return tuple(paired_difference(a, b, self._scores(a), self._scores(b)) for a, b in pairs)

    @property
    def reference(self) -> str:
        """What the chart subtracts: ``no-policy`` when evaluated, else the first baseline, else the first policy."""
        names = [condition.name for condition in self.conditions]
        return "no-policy" if "no-policy" in names else next((n for n in names if n in KNOWN_BASELINES), names[0])

    def differences_to_reference(self) -> tuple[PairedDifference, ...]:
        """Every other condition minus :attr:`reference`, per seed."""
        reference = self.reference
        return tuple(
            paired_difference(condition.name, reference, condition.accuracies, self._scores(reference))
            for condition in self.conditions
            if condition.name != reference
        )

    def table(self) -> str:
        """Two text tables: each condition's accuracy (in %), then the paired differences (in points) with verdicts."""
        return f"{self._accuracy_table()}\n\n{self._difference_table()}"

    def _accuracy_table(self) -> str:
        one_seed = len(self.seeds) == 1
        names = [printable(condition.name) for condition in self.conditions]
        width = max(len("condition"), *map(len, names))
        seeds = " ".join(f"{f'seed {seed}':>7}" for seed in self.seeds)
        summary = "accuracy (%)" if one_seed else "mean +/- std (%)"
        lines = [f"{'condition'.ljust(width)}  {summary:<16}  {seeds}"]
        for name, condition in zip(names, self.conditions):
            runs = " ".join(f"{100 * accuracy:7.2f}" for accuracy in condition.accuracies)
            spread = "" if condition.std is None else f" +/- {100 * condition.std:5.2f}"
            lines.append(f"{name.ljust(width)}  {f'{100 * condition.mean:6.2f}{spread}':<16}  {runs}")
        if one_seed:
            lines.append("(one seed: no standard deviation)")
        return "\n".join(lines)

    def _difference_table(self) -> str:
        comparisons = self.comparisons()
        if not comparisons:
            return "no paired differences: evaluate a baseline, or two policies, to compare"
        count = len(self.seeds)
        if count == 1:
            heading = f"paired differences (points), condition minus baseline; {ONE_SEED}"
        else:
            heading = (
                f"paired differences (points), condition minus baseline per seed; 95% interval: paired t over "
                f"{count} seeds (df {count - 1}, t = {t_quantile_975(count - 1):.3f})"
            )
        rows = [["condition", "minus", "mean", "95% interval", "verdict", "per seed"]]
        for comparison in comparisons:
            interval = comparison.interval
            rows.append([
                printable(comparison.condition),
                printable(comparison.baseline),
                f"{100 * comparison.mean:+.2f}",
                "n/a" if interval is None else f"[{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]",
                comparison.verdict,
                " ".join(f"{100 * difference:+.2f}" for difference in comparison.differences),
            ])
        widths = [max(len(row[column]) for row in rows) for column in range(5)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5] for row in rows]
        return "\n".join([heading, *(line.rstrip() for line in lines)])

    @classmethod
    def from_dict(cls, record: Any) -> Evaluation:
        """An evaluation back from :meth:`to_dict`'s values (e.g. a ``--json`` file), checked; ValueError says what is wrong."""
        if not isinstance(record, dict) or not isinstance(record.get("conditions"), list) or not record["conditions"]:
            raise ValueError("an evaluation must be an object with a non-empty 'conditions' list, as evaluate --json writes")
        seeds = record.get("seeds")
        if (
            not isinstance(seeds, list) or not 1 <= len(seeds) <= MAX_SEEDS
            or not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds)
        ):
            raise ValueError(f"an evaluation's 'seeds' must be a list of 1 to {MAX_SEEDS} integers")
        conditions = []
        for index, condition in enumerate(record["conditions"]):
            name = condition.get("name") if isinstance(condition, dict) else None
            accuracies = condition.get("accuracies") if isinstance(condition, dict) else None
            valid = isinstance(accuracies, list) and len(accuracies) == len(seeds) and all(
                isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1 for a in accuracies
            )
            if not isinstance(name, str) or not name or not valid:
                raise ValueError(
                    f"an evaluation's condition {index + 1} must have a name and one accuracy in [0, 1] per seed "
                    f"({len(seeds)})"
                )
            description = condition.get("description")
            conditions.append(ConditionScores(name, description if isinstance(description, str) else "", tuple(map(float, accuracies))))
        if len({condition.name for condition in conditions}) != len(conditions):
            raise ValueError("an evaluation's conditions must have distinct names")
        setup = record.get("setup")
        return cls(tuple(conditions), tuple(seeds), setup if isinstance(setup, dict) else {})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: the setup, the seeds, each condition's accuracies, and the paired comparisons."""
        count = len(self.seeds)
        return {
            "setup": self.setup,
            "seeds": list(self.seeds),
            "conditions": [
                {
                    "name": condition.name,
                    "baseline": condition.name in KNOWN_BASELINES,
                    "description": condition.description,
                    "accuracies": list(condition.accuracies),
                    "mean": condition.mean,
                    "std": condition.std,
                }
                for condition in self.conditions
            ],
            "interval": {
                "level": LEVEL,
                "method": METHOD,
                "t_quantile": t_quantile_975(count - 1) if count > 1 else None,
                "note": ONE_SEED if count == 1 else None,
            },
            "comparisons": [
                {
                    "condition": comparison.condition,
                    "baseline": comparison.baseline,
                    "differences": list(comparison.differences),
                    "mean": comparison.mean,
                    "interval": None if comparison.interval is None else list(comparison.interval),
                    "verdict": comparison.verdict,
                }
                for comparison in self.comparisons()
            ],
        }


@dataclass(frozen=True)
class _Condition:
    name: str
    description: str
    make_augment: Callable[[int, torch.device], Augment | None]  # (seed, device) -> augmentation of a run


def random_policy(shape: Sequence[int], seed: int) -> Policy:
    """A random policy: per sub-policy ``shape[i]`` distinct operations in list order, p and m uniform in [0, 1]."""
    rng = np.random.RandomState(seed)
    sub_policies = []
    for size in shape:
        chosen = sorted(rng.choice(len(OPERATION_NAMES), size=size, replace=False).tolist())
        sub_policies.append([(OPERATION_NAMES[index], float(rng.uniform()), float(rng.uniform())) for index in chosen])
    return Policy.from_list(sub_policies, name=f"random-{seed}")


def compact_initial_policy() -> Policy:
    """The compact search's starting distribution as a policy (every ordered pair of operations, weighted)."""
    from .compact import OPERATION_COUNT, CompactAugmentation

    return CompactAugmentation(operations=2).to_policy(top_k=OPERATION_COUNT**2, name="compact-initial", weighted=True)


def initial_policy() -> Policy:
    """The search's starting distribution as a policy: the 105 sub-policies at p = m = 0.5, each equally likely."""
    return Policy.from_list(
        [[(first, 0.5, 0.5), (second, 0.5, 0.5)] for first, second in SUB_POLICIES], name="initial"
    )


def published_preset(dataset: str) -> str:
    """The built-in preset closest to ``dataset``: its own for CIFAR-100, SVHN and ImageNet, else ``cifar10``."""
    base = dataset.removeprefix("reduced-")
    return base if base in ("cifar100", "svhn", "imagenet") else "cifar10"


def evaluate(
    policies: Sequence[str | os.PathLike[str] | Policy],
    dataset: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    test_dir: str | os.PathLike[str] | None = None,
    holdout: float = 0.2,
    model: str | None = None,
    image_size: int | None = None,
    epochs: int = 20,
    seeds: int = DEFAULT_SEEDS,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    cutout: int | None = None,
    flip: bool = True,
    baselines: Sequence[str] = BASELINES,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Evaluation:
    """Train ``model`` on ``dataset`` with each policy and baseline for seeds 0..seeds-1; score held-out images.

    ``policies`` are preset names, policy files, ``hf-hub:`` names or
    :class:`Policy` objects. Settings left as None take the dataset's search
    defaults (see :mod:`dada_transforms.search.settings`).

    Raises:
        SearchInputError: (a ValueError) for invalid settings, policies or data, before any training.
    """
    settings = resolve_settings(
        dataset, model=model, image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, cutout=cutout,
    )
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise SearchInputError(f"seeds must be an integer in [1, {MAX_SEEDS}], got {seeds!r}")
    if not isinstance(flip, bool):
        raise SearchInputError(f"flip must be True or False, got {flip!r}")
    conditions = _conditions(policies, baselines, dataset)
    device = resolve_device(device)
    check_model_fits(settings.model, device)
    train, test = _train_and_test_images(dataset, data_dir, download, settings.image_size, test_dir, holdout)
    train, test = train.to(device), test.to(device)

    steps = len(_batch_sizes(len(train), settings.batch_size)) * settings.epochs
    accuracies: dict[str, list[float]] = {condition.name: [] for condition in conditions}
    say = tqdm.write if progress else (lambda line, file=None: None)
    say(
        f"dada-transforms evaluate: {len(conditions)} conditions x {seeds} seeds, {settings.model}, "
        f"{settings.epochs} epochs on {len(train)} images of {settings.image_size}px, "
        f"scored on {len(test)} held-out images, on {device}",
        file=sys.stderr,
    )
    with tqdm(total=len(conditions) * seeds * steps, disable=not progress, file=sys.stderr, unit="step", dynamic_ncols=True) as bar:
        for seed in range(seeds):
            for condition in conditions:
                bar.set_description(f"{condition.name}, seed {seed}")
                augment = condition.make_augment(seed, device)
                try:
                    accuracy = _train_and_score(augment, train, test, settings, flip, seed, bar)
                except SearchDivergedError as error:
                    raise SearchInputError(
                        f"the {printable(condition.name)} run of seed {seed} diverged: {error}; "
                        f"evaluate again with a lower --lr (now {settings.lr:g})"
                    ) from None
                accuracies[condition.name].append(accuracy)
                say(f"{printable(condition.name)}, seed {seed}: held-out accuracy {100 * accuracy:.2f}%", file=sys.stderr)
    setup = {
        "dataset": dataset,
        "model": settings.model,
        "image_size": settings.image_size,
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "weight_decay": settings.weight_decay,
        "cutout": settings.cutout,
        "flip": flip,
        "train_images": len(train),
        "test_images": len(test),
        "device": str(device),
    }
    scores = tuple(ConditionScores(c.name, c.description, tuple(accuracies[c.name])) for c in conditions)
    return Evaluation(scores, tuple(range(seeds)), setup)


# -- conditions ------------------------------------------------------------------------


def _conditions(policies: Sequence[Any], baselines: Sequence[str], dataset: str) -> list[_Condition]:
    if isinstance(policies, (str, os.PathLike, Policy)):
        policies = [policies]
    if isinstance(baselines, str):
        baselines = [baselines]
    unknown = [name for name in baselines if name not in KNOWN_BASELINES]
    if unknown:
        raise SearchInputError(f"unknown baseline {unknown[0]!r}; baselines are {', '.join(KNOWN_BASELINES)}")
    if len(set(baselines)) != len(baselines):
        raise SearchInputError(f"baselines must not repeat, got {', '.join(baselines)}")
    if not policies and not baselines:
        raise SearchInputError("nothing to evaluate: give at least one policy or baseline")
    conditions: list[_Condition] = []
    shape = _RANDOM_SHAPE
    for index, spec in enumerate(policies):
        policy = spec if isinstance(spec, Policy) else _loaded(spec)
        name = _policy_name(spec, policy, index)
        if any(condition.name == name for condition in conditions) or name in KNOWN_BASELINES:
            raise SearchInputError(f"two conditions would be called {name!r}; give each policy once, under distinct names")
        if index == 0:
            shape = tuple(len(sub_policy) for sub_policy in policy)
        conditions.append(_Condition(name, f"DADA policy {name} ({len(policy)} sub-policies)", _dada_maker(lambda seed, p=policy: p)))
    preset = published_preset(dataset)
    descriptions = {
        "no-policy": "no policy: the shared crop, flip and Cutout only",
        "initial": "the search's start: all 105 sub-policies at p = m = 0.5",
        "random": f"a random policy of {len(shape)} sub-policies of {'/'.join(map(str, sorted(set(shape))))} operations, new per seed",
        "published": f"the published DADA {preset} policy",
        "randaugment": "torchvision RandAugment (2 operations, magnitude 9)",
        "autoaugment": f"torchvision AutoAugment ({_autoaugment_policy(dataset).name} policy)",
        "trivialaugment": "torchvision TrivialAugmentWide",
        "compact-initial": "the compact search's start: 15 operations equally likely, 2 per image, p = 0.5, m = 0.5",
    }
    makers: dict[str, Callable[[int, torch.device], Augment | None]] = {
        "no-policy": lambda seed, device: None,
        "initial": _dada_maker(lambda seed, policy=initial_policy(): policy),
        "random": _dada_maker(lambda seed: random_policy(shape, seed)),
        "published": _dada_maker(lambda seed, policy=load_policy(preset): policy),
        "randaugment": _per_image_maker(v2.RandAugment),
        "autoaugment": _per_image_maker(lambda: v2.AutoAugment(_autoaugment_policy(dataset))),
        "trivialaugment": _per_image_maker(v2.TrivialAugmentWide),
        "compact-initial": _dada_maker(lambda seed, policy=compact_initial_policy(): policy),
    }
    conditions += [_Condition(name, descriptions[name], makers[name]) for name in baselines]
    return conditions


def _loaded(spec: Any) -> Policy:
    try:
        return load_policy(spec)
    except ValueError as error:
        raise SearchInputError(f"cannot load policy {str(spec)!r}: {error}") from None


def _policy_name(spec: Any, policy: Policy, index: int) -> str:
    if isinstance(spec, Policy):
        return policy.name or f"policy-{index + 1}"
    text = str(spec)
    return Path(text).stem if text.endswith(".json") else text


def _dada_maker(policy_of_seed: Callable[[int], Policy]) -> Callable[[int, torch.device], Augment]:
    def make(seed: int, device: torch.device) -> Augment:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        return DADA(policy_of_seed(seed), generator=generator)

    return make


def _per_image_maker(build: Callable[[], torch.nn.Module]) -> Callable[[int, torch.device], Augment]:
    """A torchvision transform applied image by image (on a batch it would draw once for all); torch's global RNG.

    The images go through on the CPU as uint8, whatever their device, and come back to it.
    """

    def make(seed: int, device: torch.device) -> Augment:
        transform = build()
        return lambda images: per_image_on_host(transform, images)

    return make


def per_image_on_host(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """``transform`` applied to each uint8 image ``[C, H, W]`` of ``images`` on the CPU; the batch back on ``images.device``."""
    host = images.to("cpu", torch.uint8)
    return torch.stack([transform(image) for image in host]).to(images.device)


def _autoaugment_policy(dataset: str) -> v2.AutoAugmentPolicy:
    base = dataset.removeprefix("reduced-")
    if base == "svhn":
        return v2.AutoAugmentPolicy.SVHN
    return v2.AutoAugmentPolicy.IMAGENET if base == "imagenet" else v2.AutoAugmentPolicy.CIFAR10


# -- data ------------------------------------------------------------------------------


def _train_and_test_images(
    dataset: str, data_dir: Any, download: bool, image_size: int, test_dir: Any, holdout: float
) -> tuple[LabelledImages, LabelledImages]:
    if dataset != "imagefolder" and test_dir is not None:
        raise SearchInputError(f"--test-dir is for --dataset imagefolder; {dataset} is scored on its own test split")
    valid = not isinstance(holdout, bool) and isinstance(holdout, (int, float)) and 0 < holdout < 1
    if not valid:
        raise SearchInputError(f"holdout must be a fraction between 0 and 1 (exclusive), got {holdout!r}")
    data = load_search_images(dataset, data_dir, download=download, image_size=image_size)
    if dataset != "imagefolder":
        return data, _test_split(dataset, Path("data" if data_dir is None else data_dir).expanduser(), download, image_size, data)
    if test_dir is None:
        kept = len(data) - max(1, round(holdout * len(data)))
        try:
            train_indices, test_indices = stratified_split(data.labels.numpy(), kept, seed=0)
        except ValueError as error:
            raise SearchInputError(f"cannot hold out {holdout:g} of the {len(data)} images: {error}") from None
        return data.subset(train_indices), data.subset(test_indices)
    test_root = Path(test_dir).expanduser()
    check_image_folder(test_root, "--test-dir")
    test = load_search_images("imagefolder", test_root, image_size=image_size)
    if test.classes != data.classes:
        raise SearchInputError(
            f"the test folder {str(test_dir)!r} has classes {list(test.classes)}, the training folder "
            f"{list(data.classes)}; they must have the same class folders"
        )
    return data, LabelledImages(test.images, test.labels, data.num_classes, data.mean, data.std, data.classes)


def _test_split(dataset: str, root: Path, download: bool, image_size: int, train: LabelledImages) -> LabelledImages:
    """The held-out split of a torchvision dataset, resized like the training images."""
    from .data import _decode, _resized  # the loaders' own resizing and decoding

    base = dataset.removeprefix("reduced-")
    try:
        if base == "svhn":
            split = torchvision.datasets.SVHN(str(root), split="test", download=download)
            images, labels = torch.from_numpy(split.data), torch.as_tensor(split.labels)
        elif base == "imagenet":
            split = torchvision.datasets.ImageNet(str(root), split="val")
            labels = np.asarray(split.targets)
            paths = [path for path, _ in split.samples]
            if dataset == "reduced-imagenet":
                position = np.full(1000, -1)
                classes = reduced_imagenet_classes()
                position[classes] = np.arange(len(classes))
                kept = np.flatnonzero(position[labels] >= 0)
                paths, labels = [paths[i] for i in kept], position[labels[kept]]
            images, labels = _decode(paths, image_size), torch.as_tensor(labels)
        else:
            kind = torchvision.datasets.CIFAR10 if base == "cifar10" else torchvision.datasets.CIFAR100
            split = kind(str(root), train=False, download=download)
            images, labels = torch.from_numpy(split.data).permute(0, 3, 1, 2), torch.as_tensor(split.targets)
    except ImportError as error:
        raise SearchInputError(f"reading {base} needs a package that is not installed: {error}") from None
    except (RuntimeError, FileNotFoundError) as error:
        raise SearchInputError(f"the {base} test split was not found in {str(root)!r} ({error}); pass --download or --data-dir") from None
    except OSError as error:
        raise SearchInputError(f"could not download the {base} test split into {str(root)!r}: {error}") from None
    images = _resized(images.contiguous(), image_size)
    return LabelledImages(images, labels.long(), train.num_classes, train.mean, train.std, train.classes)


# -- one run ---------------------------------------------------------------------------


def _train_and_score(
    augment: Augment | None,
    train: LabelledImages,
    test: LabelledImages,
    settings: SearchSettings,
    flip: bool,
    seed: int,
    bar: tqdm,
) -> float:
    """Train a fresh network (initialised from ``seed``) with ``augment``; its accuracy on ``test``."""
    device = train.images.device
    torch.manual_seed(seed)
    network = build_model(settings.model, train.num_classes).to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=settings.lr, momentum=_MOMENTUM, weight_decay=settings.weight_decay)
    generator = torch.Generator(device=device)  # data order, crops, flips, Cutout: the same for every condition
    generator.manual_seed(seed)
    mean = torch.tensor(train.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(train.std, device=device).view(1, -1, 1, 1)
    sizes = _batch_sizes(len(train), settings.batch_size)
    total, step = settings.epochs * len(sizes), 0
    padding = settings.image_size // 8
    network.train()
    for epoch in range(settings.epochs):
        loss_sum = torch.zeros((), device=device)  # read once per epoch: no host synchronisation per step
        order = torch.randperm(len(train), generator=generator, device=device)
        for batch in order[: sum(sizes)].split(sizes):
            images = crop_and_flip(train.images[batch], padding, generator, flip)
            if augment is not None:
                images = augment(images)
            inputs = (images.float() / 255 - mean) / std
            if settings.cutout:
                inputs = inputs * cutout_mask(inputs.shape, settings.cutout, generator)
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = torch.nn.functional.cross_entropy(network(inputs), train.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), _GRAD_CLIP)
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
            bar.update(1)
        check_loss(loss_sum.item() / len(sizes), epoch, step)
        check_parameters({"network": network}, epoch)
    return _accuracy(network, test, mean, std)


@torch.no_grad()
def _accuracy(network: torch.nn.Module, test: LabelledImages, mean: torch.Tensor, std: torch.Tensor) -> float:
    network.eval()
    correct = torch.zeros((), device=test.images.device)
    for start in range(0, len(test), _SCORE_BATCH):
        images = test.images[start : start + _SCORE_BATCH]
        predictions = network((images.float() / 255 - mean) / std).argmax(1)
        correct += (predictions == test.labels[start : start + _SCORE_BATCH]).sum()
    return correct.item() / len(test)


def cutout_mask(shape: torch.Size, size: int, generator: torch.Generator) -> torch.Tensor:
    """``[N, 1, H, W]``: 0 inside a ``size`` square at a uniform pixel centre per image, clipped at the border."""
    count, _, height, width = shape
    device = generator.device
    centres = torch.rand(count, 2, 1, generator=generator, device=device)
    centre_y, centre_x = (centres[:, 0] * height).floor(), (centres[:, 1] * width).floor()
    half = size // 2
    ys = torch.arange(height, device=device).view(1, height, 1)
    xs = torch.arange(width, device=device).view(1, 1, width)
    inside_y = (ys >= (centre_y - half).view(-1, 1, 1)) & (ys < (centre_y + half).view(-1, 1, 1))
    inside_x = (xs >= (centre_x - half).view(-1, 1, 1)) & (xs < (centre_x + half).view(-1, 1, 1))
    return (~(inside_y & inside_x)).unsqueeze(1).float()
