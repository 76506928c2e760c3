"""Search settings: the published defaults per dataset, and validation of every override.

Defaults reproduce the published policies: each was searched with the settings
in its name (``genotype.py`` of the authors' training code; design notes, section 4):

========== ================== ========= ===== ======= ===== ====== ========== =======
preset     datasets           model     batch lr      wd    cutout image size crop
========== ================== ========= ===== ======= ===== ====== ========== =======
cifar10    (reduced-)cifar10  wrn-40-2  128   0.1     2e-4  16     32         pad
cifar100   (reduced-)cifar100 wrn-40-2  32    0.025   5e-4  16     32         pad
svhn       (reduced-)svhn     wrn-28-10 32    0.00125 1e-3  20     32         pad
imagenet   (reduced-)imagenet resnet50  32    0.00125 1e-4  0      224        resized
========== ================== ========= ===== ======= ===== ====== ========== =======

The authors' shell script (``train_paper.sh``) differs in three values: CIFAR-100
lr 0.1, SVHN Cutout 16, ImageNet Cutout 16 (``lr=0.1`` / ``cutout=16`` to use them).
``imagefolder`` takes the cifar10 row. All datasets: 20 epochs, temperature
0.5, architecture learning rate 0.005, top 25 sub-policies exported (chosen
uniformly; ``export="weighted"``, ours: by their learned weights; the compact
method exports all its tuples with their learned weights), the
learning rate cosine-annealed to ``lr_min`` = 0.001 (or ``lr`` if smaller),
stepped before each epoch as the published code does, validation batches
un-augmented. Validation batches are fresh each step by default, a deviation:
the authors' code reuses its first batch every step (``val_batches="fixed"``).

``crop`` is the fixed augmentation before the policy: ``"pad"`` is RandomCrop
with ``image_size // 8`` zero padding and a horizontal flip (the CIFAR/SVHN
search), ``"resized"`` is RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3,
bicubic) of the decoded square image and a horizontal flip, then
ColorJitter(0.4, 0.4, 0.4) before the policy and PCA lighting (0.1) after it:
the authors' ImageNet *search* pipeline (their training pipeline puts
ColorJitter after the policy instead).

``method`` picks what is searched and how (:mod:`.methods`): ``"published"``,
the paper's 105 sub-policies and estimator (every setting above), or
``"compact"`` (ours), which alone reads ``draws``, ``operations`` and
``objective``; the published method ignores them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from dada_transforms.ops import OPERATION_NAMES
from dada_transforms.policy import MAX_SUB_POLICIES

DATASETS = (
    "cifar10",
    "cifar100",
    "svhn",
    "reduced-cifar10",
    "reduced-cifar100",
    "reduced-svhn",
    "imagenet",
    "reduced-imagenet",
    "imagefolder",
)
SAMPLING_MODES = ("per-batch", "per-sample")
BAD_IMAGES = ("fail", "skip")  # what an unreadable image file does (not a setting: it changes only the data)
DATA_PATHS = ("auto", "memory", "stream")  # how images reach the device (not a setting: both give the same bytes)
FILE_DATASETS = ("imagenet", "reduced-imagenet", "imagefolder")  # read from image files, so they can be streamed
ESTIMATORS = ("baseline", "relax", "score-function")
VALIDATION_BATCHES = ("fresh", "fixed")
DEFAULT_LR_MIN = 0.001
MAGNITUDE_GRADIENTS = ("straight-through", "autodiff")
EXPORTS = ("top-k", "weighted")  # the top-k applied uniformly (the paper's), or sampled by their learned weights (ours)
METHODS = ("published", "compact")  # the paper's search, or ours (see search.methods)
OBJECTIVES = ("unrolled", "adversarial")  # what compact's draws are scored by
SUB_POLICY_COUNT = 105


class SearchInputError(ValueError):
    """A user error in the search's input: a setting, a dataset, a folder."""


@dataclass(frozen=True)
class _PublishedRow:
    model: str
    batch_size: int
    lr: float
    weight_decay: float
    cutout: int
    image_size: int
    crop: str = "pad"
    color_jitter: float = 0.0
    lighting: float = 0.0


_PUBLISHED = {
    "cifar10": _PublishedRow("wrn-40-2", 128, 0.1, 2e-4, 16, 32),
    "cifar100": _PublishedRow("wrn-40-2", 32, 0.025, 5e-4, 16, 32),
    "svhn": _PublishedRow("wrn-28-10", 32, 0.00125, 1e-3, 20, 32),
    "imagenet": _PublishedRow("resnet50", 32, 0.00125, 1e-4, 0, 224, crop="resized", color_jitter=0.4, lighting=0.1),
}
_ROW_OF_DATASET = {
    "cifar10": "cifar10",
    "reduced-cifar10": "cifar10",
    "cifar100": "cifar100",
    "reduced-cifar100": "cifar100",
    "svhn": "svhn",
    "reduced-svhn": "svhn",
    "imagenet": "imagenet",
    "reduced-imagenet": "imagenet",
    "imagefolder": "cifar10",
}


@dataclass(frozen=True)
class SearchSettings:
    """Everything that determines a search's result (besides the data and the device)."""

    dataset: str
    model: str
    image_size: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    arch_lr: float
    temperature: float
    top_k: int
    cutout: int
    seed: int
    sampling: str
    magnitude_grad: str
    hypergradient_xi: bool
    estimator: str = "baseline"
    val_batches: str = "fresh"
    lr_min: float = DEFAULT_LR_MIN
    sync_bn: bool = False
    crop: str = "pad"  # "pad" or "resized", from the dataset's row (see the module notes)
    color_jitter: float = 0.0  # before the policy
    lighting: float = 0.0  # after the policy
    momentum: float = 0.9
    grad_clip: float = 5.0
    export: str = "top-k"  # one of EXPORTS
    method: str = "published"  # one of METHODS
    draws: int = 4  # compact: draws per image (>= 2, for the leave-one-out baseline)
    operations: int = 2  # compact: operations applied to each image
    objective: str = "unrolled"  # compact: one of OBJECTIVES

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSettings:
        """Settings read back from :meth:`to_dict`'s output, older ones (without :data:`ADDED_SETTINGS`) included."""
        names = {field.name for field in fields(cls)}
        if isinstance(data, dict):
            data = {**ADDED_SETTINGS, **data}
        if not isinstance(data, dict) or set(data) != names:
            raise SearchInputError(f"search settings must have exactly the keys {sorted(names)}, got {data!r}")
        return cls(**data)


MAX_OPERATIONS = int(math.log(MAX_SUB_POLICIES) / math.log(len(OPERATION_NAMES)))
"""The most operations per image (compact) whose every ordered tuple fits in a policy file (15 ** 2 = 225 <= 1024 < 15 ** 3)."""
ADDED_SETTINGS = {"export": "top-k", "method": "published", "draws": 4, "operations": 2, "objective": "unrolled"}
"""Settings added after checkpoint format 4, with the value every older search (checkpoint or result) was made with."""


def _integer(value: Any, what: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise SearchInputError(f"{what} must be an integer {bound}, got {value!r}")
    return value


def _number(value: Any, what: str, *, allow_zero: bool) -> float:
    valid = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not valid or value < 0 or (value == 0 and not allow_zero):
        raise SearchInputError(f"{what} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _choice(value: Any, what: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SearchInputError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


def export_defaults(method: str, operations: int) -> tuple[int, str]:
    """``(top_k, export)`` when not given: published, the paper's top 25 chosen uniformly; compact, every
    ``15 ** operations`` tuple with its learned weight (the exact learned distribution)."""
    if method == "compact":
        return len(OPERATION_NAMES) ** operations, "weighted"
    return 25, "top-k"


def resolve_settings(
    dataset: str,
    *,
    model: str | None = None,
    image_size: int | None = None,
    epochs: int = 20,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    arch_lr: float = 0.005,
    temperature: float = 0.5,
    top_k: int | None = None,
    cutout: int | None = None,
    seed: int = 0,
    sampling: str = "per-batch",
    magnitude_grad: str = "straight-through",
    hypergradient_xi: bool = False,
    estimator: str = "baseline",
    val_batches: str = "fresh",
    lr_min: float | None = None,
    sync_bn: bool = False,
    export: str | None = None,
    method: str = "published",
    draws: int = 4,
    operations: int = 2,
    objective: str = "unrolled",
) -> SearchSettings:
    """The settings for ``dataset``: published defaults where an argument is None, each value validated.

    ``top_k`` and ``export`` default per method (:func:`export_defaults`).

    Raises:
        SearchInputError: naming the first invalid value.
    """
    _choice(dataset, "dataset", DATASETS)
    row = _PUBLISHED[_ROW_OF_DATASET[dataset]]
    model = row.model if model is None else model
    if not isinstance(model, str) or not model:
        raise SearchInputError(f"model must be a model name, got {model!r}")
    image_size = _integer(row.image_size if image_size is None else image_size, "image size", 8)
    cutout = _integer(row.cutout if cutout is None else cutout, "cutout", 0)
    if cutout > image_size:
        raise SearchInputError(f"cutout {cutout} px is larger than the image size {image_size} px")
    if not isinstance(hypergradient_xi, bool):
        raise SearchInputError(f"hypergradient_xi must be True or False, got {hypergradient_xi!r}")
    if not isinstance(sync_bn, bool):
        raise SearchInputError(f"sync_bn must be True or False, got {sync_bn!r}")
    lr = _number(row.lr if lr is None else lr, "learning rate", allow_zero=False)
    if lr_min is None:
        lr_min = min(DEFAULT_LR_MIN, lr)
    lr_min = _number(lr_min, "minimum learning rate", allow_zero=True)
    if lr_min > lr:
        raise SearchInputError(f"minimum learning rate {lr_min!r} is above the learning rate {lr!r}")
    method = _choice(method, "method", METHODS)
    if method == "compact":
        draws = _integer(draws, "draws of the compact method (its leave-one-out baseline needs two)", 2)
    draws = _integer(draws, "draws", 1)
    operations = _integer(
        operations, f"operations ({len(OPERATION_NAMES)}^N ordered tuples must fit a policy file's {MAX_SUB_POLICIES} "
        f"sub-policies)", 1, MAX_OPERATIONS,
    )
    choices = SUB_POLICY_COUNT if method == "published" else len(OPERATION_NAMES) ** operations  # compact: N-tuples
    default_top_k, default_export = export_defaults(method, operations)
    top_k = default_top_k if top_k is None else top_k
    export = default_export if export is None else export
    return SearchSettings(
        dataset=dataset,
        model=model,
        image_size=image_size,
        epochs=_integer(epochs, "epochs", 1),
        batch_size=_integer(row.batch_size if batch_size is None else batch_size, "batch size", 1),
        lr=lr,
        weight_decay=_number(row.weight_decay if weight_decay is None else weight_decay, "weight decay", allow_zero=True),
        arch_lr=_number(arch_lr, "arch learning rate", allow_zero=False),
        temperature=_number(temperature, "temperature", allow_zero=False),
        top_k=_integer(top_k, "top-k", 1, choices),
        cutout=cutout,
        seed=_integer(seed, "seed", 0),
        sampling=_choice(sampling, "sampling", SAMPLING_MODES),
        magnitude_grad=_choice(magnitude_grad, "magnitude gradient", MAGNITUDE_GRADIENTS),
        hypergradient_xi=hypergradient_xi,
        estimator=_choice(estimator, "estimator", ESTIMATORS),
        val_batches=_choice(val_batches, "validation batches", VALIDATION_BATCHES),
        lr_min=lr_min,
        sync_bn=sync_bn,
        crop=row.crop,
        color_jitter=row.color_jitter,
        lighting=row.lighting,
        export=_choice(export, "export", EXPORTS),
        method=method,
        draws=draws,
        operations=operations,
        objective=_choice(objective, "objective", OBJECTIVES),
    )


def check_data_options(dataset: str, data_path: str, workers: int | None) -> None:
    """Check how the images of ``dataset`` are to reach the device (before anything is loaded or written).

    Raises:
        SearchInputError: for an unknown ``data_path``, ``"stream"`` for a dataset
            that torchvision reads into memory, or a negative ``workers``.
    """
    _choice(data_path, "data path", DATA_PATHS)
    if data_path == "stream" and dataset not in FILE_DATASETS:
        raise SearchInputError(
            f"streaming applies to {', '.join(FILE_DATASETS[:-1])} and {FILE_DATASETS[-1]}; torchvision reads "
            f"{dataset} into memory: use --data-path auto or memory"
        )
    if workers is not None:
        _integer(workers, "workers", 0)


def epoch_learning_rate(settings: SearchSettings, epoch: int) -> float:
    """The network's learning rate in ``epoch`` (0-based): the published schedule.

    Cosine from ``lr`` to ``lr_min`` over ``epochs``, stepped *before* each epoch
    as the published code does (``CosineAnnealingLR(T_max=epochs, eta_min=lr_min)``
    with ``scheduler.step()`` at the top of the epoch loop), so the first epoch
    already runs one step down the cosine and the last at ``lr_min``.
    """
    progress = (epoch + 1) / settings.epochs
    return settings.lr_min + (settings.lr - settings.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))
