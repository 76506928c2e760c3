"""The search as a Python function: data on the device, epochs of bilevel steps, checkpoints, export.

Randomness: the model and the control variate are initialised from ``seed``;
every epoch reseeds torch's global generators and the search's own generator
(data order, crops, flips, augmentation draws) from ``(seed, epoch)``. A search
resumed from a checkpoint therefore continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from dada_transforms.policy import Policy
from dada_transforms.presets import user_preset_dir

from . import checkpoint
from .augmentation import AugmentationParameters
from .batches import crop_and_flip
from .bilevel import BilevelSearchStep
from .data import LabelledImages, load_search_images, split_halves
from .device_checks import check_model_fits, resolve_device
from .divergence import SearchDivergedError, check_loss, check_parameters, diverged
from .export import check_hub_repo, epoch_snapshot, export_result, push_result, ranked_sub_policies
from .fingerprint import data_fingerprint
from .models import build_model
from .output_files import OutputPaths, check_not_builtin, check_output, output_paths
from .output_lock import OutputLock
from .settings import SearchInputError, SearchSettings, epoch_learning_rate, resolve_settings

_REFRESH_STEPS = 10  # steps between progress-bar updates and checks that the loss is finite


@dataclass(frozen=True)
class SearchResult:
    """What a search produced."""

    policy: Policy
    parameters: dict[str, torch.Tensor]  # alpha [105], probabilities [105, 2], magnitudes [105, 2], control_variate.*, history.*
    paths: OutputPaths


def search(
    dataset: str = "reduced-cifar10",
    *,
    name: str,
    output: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    bad_images: str = "fail",
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
    estimator: str = "baseline",
    val_batches: str = "fresh",
    lr_min: float | None = None,
    device: str | torch.device | None = None,
    resume: bool = False,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    progress: bool = True,
) -> SearchResult:
    """Search a DADA policy and write ``OUTPUT/NAME.json`` and ``OUTPUT/NAME.safetensors``.

    Settings left as None take the published value for ``dataset`` (see
    :mod:`dada_transforms.search.settings`). ``output`` defaults to the user
    preset directory, so that ``DADA(name)`` loads the result by name.
    ``resume=True`` continues from ``OUTPUT/NAME.checkpoint/`` when it exists
    (same settings and data required); an existing checkpoint without ``resume``
    is an error unless ``overwrite=True`` discards it. ``bad_images="skip"``
    leaves unreadable image files out. ``push_to_hub="org/name"`` uploads the
    result. One search at a time may write a given ``OUTPUT/NAME``.

    Raises:
        SearchInputError: (a ValueError) for invalid settings, missing data, an
            unusable output folder or checkpoint, before any training; during
            and after it, for a diverging search, a failed write or a failed
            push (each saying what was kept on disk).
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
        estimator=estimator,
        val_batches=val_batches,
        lr_min=lr_min,
    )
    paths = output_paths(user_preset_dir() if output is None else output, name)
    check_output(paths, name)
    check_not_builtin(paths, name)
    if push_to_hub is not None:
        check_hub_repo(push_to_hub)
    device = resolve_device(device)
    check_model_fits(settings.model, device)
    with OutputLock(paths):
        saved = checkpoint.checkpoint_to_resume(paths.checkpoint, settings, resume=resume, overwrite=overwrite)
        data = load_search_images(
            settings.dataset, data_dir, download=download, image_size=settings.image_size, bad_images=bad_images
        )
        if data.skipped:
            _say(progress, f"dada-search: left out {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0]!r}")
        try:
            train_indices, val_indices = split_halves(data.labels)
        except ValueError as error:
            raise SearchInputError(f"cannot split the {len(data)} searched images in two stratified halves: {error}") from None
        fingerprint = data_fingerprint(data, train_indices, val_indices)
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
            estimator=settings.estimator,
            color_jitter=settings.color_jitter,
            lighting=settings.lighting,
            generator=generator,
        )
        history: list[dict[str, float]] = []
        start_epoch = 0
        if saved is not None:
            start_epoch, history = checkpoint.restore_checkpoint(
                paths.checkpoint, saved, fingerprint, network, augmentation, step
            )

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
                try:
                    stats = _run_epoch(step, train, val, settings, epoch, generator, bar)
                    check_parameters({"network": network, "augmentation": augmentation}, epoch)
                except SearchDivergedError as error:
                    raise diverged(error, settings, paths.checkpoint, epoch) from None
                history.append({"epoch": epoch + 1, **stats, **epoch_snapshot(augmentation)})
                top = ", ".join(f"{a}+{b} {weight:.4f}" for a, b, weight in ranked_sub_policies(augmentation, 5))
                _say(progress, f"epoch {epoch + 1}/{settings.epochs}: loss {stats['loss']:.4f}, accuracy {stats['accuracy']:.4f}; top: {top}")
                checkpoint.save_checkpoint(
                    paths.checkpoint,
                    checkpoint.SearchState(
                        epoch=epoch + 1,
                        settings=settings,
                        model=network.state_dict(),
                        augmentation=augmentation.tensors(),
                        step=step.state_dict(),
                        history=history,
                        data=fingerprint,
                    ),
                )

        metadata = {"search": settings.to_dict(), "searched_images": len(data), "history": history}
        policy, parameters = export_result(augmentation, paths, name, settings.top_k, metadata)
        shutil.rmtree(paths.checkpoint, ignore_errors=True)
        _say(progress, f"wrote {paths.policy} and {paths.parameters}")
        if push_to_hub is not None:
            push_result(paths, push_to_hub)
            _say(progress, f"pushed to the Hub: {push_to_hub}")
    return SearchResult(policy, parameters, paths)


def _say(progress: bool, line: str) -> None:
    """A log line on stderr (above the progress bar) when progress is shown."""
    if progress:
        tqdm.write(line, file=sys.stderr)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


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
    """One pass over search-train; returns the mean loss and accuracy.

    Each step's validation batch is un-augmented: the next ``len(batch)`` images of
    search-val in this epoch's order (``val_batches="fresh"``), or always its first
    ``batch_size`` images (``"fixed"``, as the authors' code reuses its first batch).
    """
    seed = _epoch_seed(settings.seed, epoch)
    torch.manual_seed(seed)
    generator.manual_seed(seed)
    for group in step.weight_optimizer.param_groups:
        group["lr"] = epoch_learning_rate(settings, epoch)
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
        if settings.val_batches == "fixed":
            val_batch = slice(0, settings.batch_size)
        else:
            start = index * settings.batch_size
            val_batch = val_order[start : start + len(train_batch)]
        stats = step.step(
            crop_and_flip(train.images[train_batch], padding, generator),
            train.labels[train_batch],
            val.images[val_batch],
            val.labels[val_batch],
        )
        loss_sum += stats.loss.detach() * len(train_batch)
        correct_sum += stats.accuracy.detach() * len(train_batch)
        seen += len(train_batch)
        bar.update(1)
        if (index + 1) % _REFRESH_STEPS == 0 or index + 1 == len(batches):
            mean_loss = loss_sum.item() / seen
            check_loss(mean_loss, epoch, index + 1)
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{correct_sum.item() / seen:.3f}", refresh=False)
    return {"loss": loss_sum.item() / seen, "accuracy": correct_sum.item() / seen}
