"""The search as a Python function: data on the device, epochs of bilevel steps, checkpoints, export.

Randomness: the model and the control variate are initialised from ``seed``;
every epoch reseeds torch's global generators and the search's own generator
(data order, crops, flips, augmentation draws) from ``(seed, epoch)``. A search
resumed from a checkpoint therefore continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dada_transforms.policy import Policy
from dada_transforms.presets import preset_infos, user_preset_dir

from . import checkpoint
from .augmentation import AugmentationParameters
from .batches import crop_and_flip
from .bilevel import BilevelSearchStep
from .data import LabelledImages, load_search_images, split_halves
from .export import OutputPaths, export_result, output_paths, ranked_sub_policies
from .models import build_model, check_model_name
from .settings import SearchInputError, SearchSettings, resolve_settings

_REFRESH_STEPS = 10
_HUB_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class SearchResult:
    """What a search produced."""

    policy: Policy
    parameters: dict[str, torch.Tensor]  # alpha [105], probabilities [105, 2], magnitudes [105, 2], control_variate.*
    paths: OutputPaths


def search(
    dataset: str = "reduced-cifar10",
    *,
    name: str,
    output: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    model: str | None = None,
    image_size: int | None = None,
    epochs: int = 20,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    arch_lr: float = 0.005,
    temperature: float = 0.5,
    top_k: int = 25,
    cutout: int | None = None,
    seed: int = 0,
    sampling: str = "per-batch",
    magnitude_grad: str = "straight-through",
    hypergradient_xi: bool = False,
    device: str | torch.device | None = None,
    resume: bool = False,
    push_to_hub: str | None = None,
    progress: bool = True,
) -> SearchResult:
    """Search a DADA policy and write ``OUTPUT/NAME.json`` and ``OUTPUT/NAME.safetensors``.

    Settings left as None take the published value for ``dataset`` (see
    :mod:`dada_transforms.search.settings`). ``output`` defaults to the user
    preset directory, so that ``DADA(name)`` loads the result by name.
    ``resume=True`` continues from ``OUTPUT/NAME.checkpoint/`` when it exists
    (same settings required). ``push_to_hub="org/name"`` uploads the result.

    Raises:
        SearchInputError: (a ValueError) for invalid settings, missing data or
            a checkpoint of different settings, before any training.
    """
    settings = resolve_settings(
        dataset,
        model=model,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        arch_lr=arch_lr,
        temperature=temperature,
        top_k=top_k,
        cutout=cutout,
        seed=seed,
        sampling=sampling,
        magnitude_grad=magnitude_grad,
        hypergradient_xi=hypergradient_xi,
    )
    check_model_name(settings.model)
    device = _device(device)
    output = user_preset_dir() if output is None else Path(output).expanduser()
    paths = _checked_output_paths(output, name)
    if push_to_hub is not None and not _HUB_REPO.fullmatch(push_to_hub):
        raise SearchInputError(f"push_to_hub must be a Hub repository id 'org/name', got {push_to_hub!r}")
    state_dir = checkpoint.checkpoint_dir(output, name)
    saved = _resumable_state(state_dir, settings) if resume else None

    data = load_search_images(settings.dataset, data_dir, download=download, image_size=settings.image_size)
    try:
        train_indices, val_indices = split_halves(data.labels)
    except ValueError as error:
        raise SearchInputError(f"cannot split the {len(data)} searched images in two stratified halves: {error}") from None
    train, val = data.subset(train_indices).to(device), data.subset(val_indices).to(device)

    torch.manual_seed(settings.seed)
    network = build_model(settings.model, data.num_classes).to(device)
    augmentation = AugmentationParameters(temperature=settings.temperature).to(device)
    generator = torch.Generator(device=device)
    step = BilevelSearchStep(
        network,
        augmentation,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        arch_lr=settings.arch_lr,
        grad_clip=settings.grad_clip,
        cutout=settings.cutout,
        mean=data.mean,
        std=data.std,
        sampling=settings.sampling,
        magnitude_grad=settings.magnitude_grad,
        hypergradient_xi=settings.hypergradient_xi,
        generator=generator,
    )
    history: list[dict[str, float]] = []
    if saved is not None:
        network.load_state_dict(saved.model)
        augmentation.load_tensors({key: value.to(device) for key, value in saved.augmentation.items()})
        step.load_state_dict(saved.step)
        history = list(saved.history)
    start_epoch = saved.epoch if saved is not None else 0

    steps_per_epoch = len(_batch_sizes(len(train), settings.batch_size))
    bar = tqdm(
        total=settings.epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        disable=not progress,
        file=sys.stderr,
        unit="step",
        dynamic_ncols=True,
    )
    _say(
        progress,
        f"dada-search: {settings.dataset}, {len(train)} search-train + {len(val)} search-val images of "
        f"{settings.image_size}px, {settings.model}, {steps_per_epoch} steps/epoch on {device}"
        + (f", resuming after epoch {start_epoch}" if start_epoch else ""),
    )
    with bar:
        for epoch in range(start_epoch, settings.epochs):
            stats = _run_epoch(step, train, val, settings, epoch, generator, bar)
            history.append({"epoch": epoch + 1, **stats})
            top = ", ".join(f"{a}+{b} {weight:.4f}" for a, b, weight in ranked_sub_policies(augmentation, 5))
            _say(progress, f"epoch {epoch + 1}/{settings.epochs}: loss {stats['loss']:.4f}, accuracy {stats['accuracy']:.4f}; top: {top}")
            checkpoint.save_checkpoint(
                state_dir,
                checkpoint.SearchState(
                    epoch=epoch + 1,
                    settings=settings,
                    model=network.state_dict(),
                    augmentation=augmentation.tensors(),
                    step=step.state_dict(),
                    history=history,
                ),
            )

    metadata = {"search": settings.to_dict(), "searched_images": len(data), "history": history}
    policy, parameters = export_result(augmentation, paths, name, settings.top_k, metadata)
    shutil.rmtree(state_dir, ignore_errors=True)
    _say(progress, f"wrote {paths.policy} and {paths.parameters}")
    if push_to_hub is not None:
        from dada_transforms.hub import push_preset

        push_preset(paths.policy, push_to_hub, safetensors_path=paths.parameters)
        _say(progress, f"pushed to the Hub: {push_to_hub}")
    return SearchResult(policy, parameters, paths)


def _checked_output_paths(output: Path, name: str) -> OutputPaths:
    """The result files; a built-in preset's name is refused in the user preset directory (it would be shadowed)."""
    paths = output_paths(output, name)
    if output == user_preset_dir() and any(info.name == name and info.source == "built-in" for info in preset_infos()):
        raise SearchInputError(
            f"preset name {name!r} is a built-in preset, which DADA({name!r}) would load instead of this search's "
            f"result; choose another name (e.g. {name + '-searched'!r}) or pass an output folder"
        )
    return paths


def _resumable_state(state_dir: Path, settings: SearchSettings) -> checkpoint.SearchState | None:
    """The checkpoint to resume from, if any; it must have been made with the same settings."""
    saved = checkpoint.load_checkpoint(state_dir)
    if saved is None or saved.settings == settings:
        return saved
    before, now = saved.settings.to_dict(), settings.to_dict()
    changed = ", ".join(f"{key}: {before[key]!r} there, {now[key]!r} now" for key in sorted(now) if before[key] != now[key])
    raise SearchInputError(
        f"the checkpoint in {str(state_dir)!r} was made with other settings ({changed}); "
        f"repeat the original settings to resume, or drop --resume to start afresh"
    )


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise SearchInputError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SearchInputError(f"device {str(device)!r} requested but CUDA is not available here; use --device cpu")
    return device


def _say(progress: bool, line: str) -> None:
    """A log line on stderr (above the progress bar) when progress is shown."""
    if progress:
        tqdm.write(line, file=sys.stderr)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _cosine_lr(settings: SearchSettings, epoch: int) -> float:
    return settings.lr * 0.5 * (1 + math.cos(math.pi * epoch / settings.epochs))


def _batch_sizes(count: int, batch_size: int) -> list[int]:
    """Sizes of an epoch's batches; a last batch of one image is dropped (BatchNorm cannot train on it)."""
    sizes = [min(batch_size, count - start) for start in range(0, count, batch_size)]
    return sizes[:-1] if len(sizes) > 1 and sizes[-1] == 1 else sizes


def _run_epoch(
    step: BilevelSearchStep,
    train: LabelledImages,
    val: LabelledImages,
    settings: SearchSettings,
    epoch: int,
    generator: torch.Generator,
    bar: tqdm,
) -> dict[str, float]:
    """One pass over search-train (paired with as many search-val images); returns the mean loss and accuracy."""
    seed = _epoch_seed(settings.seed, epoch)
    torch.manual_seed(seed)
    generator.manual_seed(seed)
    for group in step.weight_optimizer.param_groups:
        group["lr"] = _cosine_lr(settings, epoch)
    device = train.images.device
    train_order = torch.randperm(len(train), generator=generator, device=device)
    val_order = torch.randperm(len(val), generator=generator, device=device)
    padding = settings.image_size // 8
    loss_sum = torch.zeros((), device=device)
    correct_sum = torch.zeros((), device=device)
    seen = 0
    bar.set_description(f"epoch {epoch + 1}/{settings.epochs}")
    sizes = _batch_sizes(len(train), settings.batch_size)
    batches = train_order[: sum(sizes)].split(sizes)
    for index, train_batch in enumerate(batches):
        start = index * settings.batch_size
        val_batch = val_order[start : start + len(train_batch)]
        stats = step.step(
            crop_and_flip(train.images[train_batch], padding, generator),
            train.labels[train_batch],
            crop_and_flip(val.images[val_batch], padding, generator),
            val.labels[val_batch],
        )
        loss_sum += stats.loss.detach() * len(train_batch)
        correct_sum += stats.accuracy.detach() * len(train_batch)
        seen += len(train_batch)
        bar.update(1)
        if (index + 1) % _REFRESH_STEPS == 0 or index + 1 == len(batches):
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct_sum.item() / seen:.3f}", refresh=False)
    return {"loss": loss_sum.item() / seen, "accuracy": correct_sum.item() / seen}
