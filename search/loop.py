"""The search as a Python function: data on the device, epochs of bilevel steps, checkpoints, export.

Randomness: the model and the control variate are initialised from ``seed``;
every epoch reseeds the search's own generator (data order, crops, flips,
augmentation draws) from ``(seed, epoch)`` and torch's global generators
(dropout) from ``(seed, epoch, rank)``. A search resumed from a checkpoint
therefore continues exactly as an uninterrupted one.

Under torchrun the processes search together (see :mod:`.distributed`):
``batch_size`` is the global batch, each process takes its equal share of
every batch; rank 0 alone checks and locks the output folder, writes
checkpoints and results, pushes to the Hub and shows progress; every process
resumes from rank 0's checkpoint. Errors in the set-up (before training) are
agreed on, so that every process stops with the same message.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dada_transforms.policy import Policy
from dada_transforms.presets import user_preset_dir

from . import checkpoint
from .augmentation import AugmentationParameters
from .batches import color_jittered, crop_and_flip, resized_crop_and_flip
from .bilevel import BilevelSearchStep
from .data import ImageFiles, LabelledImages, open_search_images, split_halves
from .device_checks import check_model_fits, deterministic_cudnn, device_data_budget, resolve_device
from .distributed import (
    DEFAULT_TIMEOUT_S,
    AgreedError,
    Processes,
    agreed,
    broadcast_bytes,
    check_agreement,
    gather,
    process_device,
    process_group,
    processes_from_environment,
    shared_folder,
    sum_,
)
from .divergence import SearchDivergedError, check_loss, check_parameters, diverged
from .export import check_hub_repo, epoch_snapshot, export_result, push_result, ranked_sub_policies
from .fingerprint import comparable_fingerprint, data_fingerprint
from .models import build_model, synchronized_batchnorm
from .noise_band import outside_line
from .noise_floor import null_pass_floor, objective_summary
from .output_files import OutputPaths, check_not_builtin, check_output, output_paths
from .output_lock import OutputLock
from .settings import SearchInputError, SearchSettings, check_data_options, epoch_learning_rate, resolve_settings
from .streaming import MemoryBatches, StreamedBatches

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
    data_path: str = "auto",
    workers: int | None = None,
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
    sync_bn: bool = False,
    export: str = "top-k",
    device: str | torch.device | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
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
    leaves unreadable image files out. ``data_path`` says how images reach the
    device: ``"memory"`` (decoded once, held on the device: fastest),
    ``"stream"`` (image files decoded by ``workers`` DataLoader processes each
    step: bounded host memory) or ``"auto"`` (stream when the decoded data
    would not fit comfortably in memory); both give the same search.
    ``export="weighted"`` writes the top-k sub-policies with their learned weights
    (renormalised) as sampling weights instead of the paper's uniform choice (``"top-k"``).
    ``push_to_hub="org/name"`` uploads the result. One search at a time may
    write a given ``OUTPUT/NAME``.

    Under torchrun every process calls this with the same arguments (see the
    module notes); ``sync_bn`` then makes BatchNorm use the statistics of the
    global batch (``SyncBatchNorm``), and ``timeout`` (seconds) bounds every
    collective, so that a process that stalls ends the job.

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
        sync_bn=sync_bn,
        export=export,
    )
    check_data_options(settings.dataset, data_path, workers)
    processes = processes_from_environment()
    if settings.batch_size % processes.world_size:  # the same on every process: rank 0 reports it
        raise AgreedError(
            f"batch size {settings.batch_size} (the global batch) must be a multiple of the {processes.world_size} "
            f"processes, so that each takes an equal share"
        )
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout < float("inf")):
        raise AgreedError(f"timeout must be a positive number of seconds, got {timeout!r}")
    paths = output_paths(user_preset_dir() if output is None else output, name)
    progress = progress and processes.is_main
    device = process_device(processes, resolve_device(device))
    if settings.sync_bn and processes.distributed and device.type != "cuda":
        raise AgreedError(f"--sync-bn (SyncBatchNorm) needs CUDA devices, the search runs on {device.type}")
    with process_group(processes, device, timeout), ExitStack() as held:
        held.enter_context(deterministic_cudnn())  # a resumed search repeats the same convolutions
        check_agreement(processes, {  # one process started with other arguments would search something else
            **settings.to_dict(), "name": name, "data_path": data_path, "bad_images": bad_images, "download": download,
            "resume": resume, "overwrite": overwrite, "timeout": timeout, "push_to_hub": push_to_hub,
        }, "settings")

        def open_output() -> dict[str, Any] | None:
            check_model_fits(settings.model, device)
            if not processes.is_main:
                return None
            check_output(paths, name)
            check_not_builtin(paths, name)
            if push_to_hub is not None:
                check_hub_repo(push_to_hub)
            held.enter_context(OutputLock(paths))
            saved = checkpoint.checkpoint_to_resume(paths, settings, resume=resume, overwrite=overwrite)
            if saved is not None and saved["processes"] != processes.world_size:
                made, now = saved["processes"], processes.world_size
                raise SearchInputError(
                    f"the checkpoint in {str(paths.checkpoint)!r} was made by {made} process{'es' if made > 1 else ''} "
                    f"sharing each batch, this search has {now}: resume it with {made} (torchrun --nproc-per-node), "
                    f"or run with --overwrite instead of --resume to start afresh"
                )
            if resume and saved is None:
                print(f"dada-search: nothing to resume in {str(paths.checkpoint)!r}: starting afresh", file=sys.stderr)
            return saved

        saved = agreed(processes, open_output)
        resuming = broadcast_bytes(processes, (b"1" if saved else b"0") if processes.is_main else None) == b"1"

        def open_data() -> tuple[LabelledImages | ImageFiles, np.ndarray, np.ndarray]:
            data = open_search_images(
                settings.dataset,
                data_dir,
                download=download,
                image_size=settings.image_size,
                bad_images=bad_images,
                data_path=data_path,
                processes_on_node=processes.local_world_size,
                device_budget=device_data_budget(settings.model, device),
            )
            if isinstance(data, LabelledImages):  # held on the device beside the network
                check_model_fits(settings.model, device, data_bytes=data.images.numel() * data.images.element_size())
            try:
                train_indices, val_indices = split_halves(data.labels)
            except ValueError as error:
                raise SearchInputError(f"cannot split the {len(data)} searched images in two stratified halves: {error}") from None
            if len(train_indices) < processes.world_size:
                raise SearchInputError(
                    f"search-train holds {len(train_indices)} images, fewer than the {processes.world_size} processes"
                )
            return data, train_indices, val_indices

        data, train_indices, val_indices = agreed(processes, open_data)
        if data.skipped:
            _say(progress, f"dada-search: left out {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0]!r}")
        fingerprint = agreed(processes, lambda: data_fingerprint(data, train_indices, val_indices))  # on every process
        check_agreement(processes, comparable_fingerprint(fingerprint), "the searched data")
        train, val = data.subset(train_indices), data.subset(val_indices)
        if isinstance(data, ImageFiles):
            source = StreamedBatches(
                train, val, device, workers=workers, bad_images=bad_images, on_skip=lambda line: _say(progress, f"dada-search: {line}")
            )
            how = f"streamed by {source.workers} decoding worker(s) per process"
        else:
            if workers is not None:
                _say(progress, "dada-search: --workers applies to streamed data only; these images are held in memory")
            source, how = MemoryBatches(train.to(device), val.to(device)), "held in memory"

        torch.manual_seed(settings.seed)
        network = build_model(settings.model, data.num_classes).to(device)
        if settings.sync_bn and processes.distributed:
            network = synchronized_batchnorm(network)
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
            lighting=settings.lighting,  # after the policy; ColorJitter comes before it, in _run_epoch
            generator=generator,
            processes=processes,
        )
        history: list[dict[str, Any]] = []
        start_epoch = 0
        if resuming:
            files = lambda folder: [checkpoint.INDEX_FILE, saved["tensors"]]  # noqa: E731 (rank 0's checkpoint)
            limit = checkpoint.max_tensor_file_bytes(network, augmentation)
            with shared_folder(processes, paths.checkpoint, files, limit) as folder:

                def restore() -> tuple[int, list[dict[str, Any]]]:
                    index = saved if processes.is_main else checkpoint.read_checkpoint(folder, settings)
                    return checkpoint.restore_checkpoint(folder, index, fingerprint, network, augmentation, step)

                start_epoch, history = agreed(processes, restore)

        steps_per_epoch = len(_batch_sizes(len(train), settings.batch_size, processes.world_size))
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
            f"{settings.image_size}px ({how}), {settings.model}, {steps_per_epoch} steps/epoch on {device}"
            + (f", {processes.world_size} processes sharing each batch" if processes.distributed else "")
            + (f", resuming after epoch {start_epoch}" if start_epoch else ""),
        )
        with bar:
            for epoch in range(start_epoch, settings.epochs):
                try:
                    stats = _run_epoch(step, source, len(train), len(val), settings, epoch, generator, bar, processes)
                    check_parameters({"network": network, "augmentation": augmentation}, epoch)
                except SearchDivergedError as error:
                    raise diverged(error, settings, paths.checkpoint, epoch) from None
                history.append({"epoch": epoch + 1, **stats, **epoch_snapshot(augmentation)})
                top = ", ".join(f"{a}+{b} {weight:.4f}" for a, b, weight in ranked_sub_policies(augmentation, 5))
                _say(progress, f"epoch {epoch + 1}/{settings.epochs}: loss {stats['loss']:.4f}, accuracy {stats['accuracy']:.4f}; top: {top}")
                if processes.is_main:
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
                            processes=processes.world_size,
                        ),
                    )

        sizes = _batch_sizes(len(train), settings.batch_size, processes.world_size)
        floor = null_pass_floor(
            [entry["objective"] for entry in history],
            sizes if settings.sampling == "per-sample" else [processes.world_size] * len(sizes),
            estimator=settings.estimator,
            arch_lr=settings.arch_lr,
            temperature=settings.temperature,
            seed=settings.seed,
        )
        with torch.no_grad():
            outside = floor.outside(augmentation.sub_policy_weights(), augmentation.probabilities, augmentation.magnitudes)
        metadata = {
            "search": settings.to_dict(),
            "searched_images": len(data),
            "history": history,
            "noise_floor": floor.to_dict(),
            "outside_noise_floor": outside,
        }

        def finish() -> tuple[Policy, dict[str, torch.Tensor]]:
            result = export_result(
                augmentation, paths, name, settings.top_k, metadata, write=processes.is_main, weighted=settings.export == "weighted"
            )
            if processes.is_main:
                shutil.rmtree(paths.checkpoint, ignore_errors=True)
                _say(progress, f"wrote {paths.policy} and {paths.parameters}")
                if push_to_hub is not None:
                    push_result(paths, push_to_hub)
                    _say(progress, f"pushed to the Hub: {push_to_hub}")
                _say(progress, f"dada-search: {outside_line(outside)}")
            return result

        policy, parameters = agreed(processes, finish)
    return SearchResult(policy, parameters, paths)


def _say(progress: bool, line: str) -> None:
    """A log line on stderr (above the progress bar) when progress is shown."""
    if progress:
        tqdm.write(line, file=sys.stderr)


def _epoch_seed(*entropy: int) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _batch_sizes(count: int, batch_size: int, processes: int = 1) -> list[int]:
    """Sizes of an epoch's global batches over ``count`` images.

    The last batch is cut to a multiple of ``processes`` (equal shares) and
    dropped when that leaves one image or fewer per process (BatchNorm cannot
    train on one image).
    """
    sizes = [min(batch_size, count - start) for start in range(0, count, batch_size)]
    sizes[-1] -= sizes[-1] % processes
    return sizes[:-1] if len(sizes) > 1 and sizes[-1] <= processes else sizes


def _run_epoch(
    step: BilevelSearchStep,
    source: MemoryBatches | StreamedBatches,
    train_count: int,
    val_count: int,
    settings: SearchSettings,
    epoch: int,
    generator: torch.Generator,
    bar: tqdm,
    processes: Processes,
) -> dict[str, Any]:
    """One pass over search-train; returns its mean loss, accuracy and the quantiles of its objective values.

    Loss and accuracy are over every process's images; ``objective`` summarises
    the values ``F`` of every draw of every process (:func:`.noise_floor.objective_summary`),
    from which the noise floor is computed at the end. Before the policy, each
    image is cropped and flipped (``settings.crop``: padded RandomCrop, or
    RandomResizedCrop), then colour-jittered if ``settings.color_jitter``.

    Each step's validation batch is un-augmented: the next ``len(batch)`` images of
    search-val in this epoch's order (``val_batches="fresh"``), or always its first
    ``batch_size`` images (``"fixed"``, as the authors' code reuses its first batch).
    Every process orders the data alike and takes its share of each batch.
    """
    seed = _epoch_seed(settings.seed, epoch)
    torch.manual_seed(seed if processes.is_main else _epoch_seed(settings.seed, epoch, processes.rank))
    generator.manual_seed(seed)
    for group in step.weight_optimizer.param_groups:
        group["lr"] = epoch_learning_rate(settings, epoch)
    device = generator.device
    train_order = torch.randperm(train_count, generator=generator, device=device)
    val_order = torch.randperm(val_count, generator=generator, device=device)
    padding = settings.image_size // 8
    sums = torch.zeros(2, device=device)  # loss and correct predictions, summed over this process's images
    seen = 0
    bar.set_description(f"epoch {epoch + 1}/{settings.epochs}")
    sizes = _batch_sizes(train_count, settings.batch_size, processes.world_size)
    batches = train_order[: sum(sizes)].split(sizes)
    fixed = min(settings.batch_size, val_count)
    fixed_val_batch = processes.shard(torch.arange(fixed - fixed % processes.world_size, device=device))
    if settings.val_batches == "fixed":
        val_batches = [fixed_val_batch] * len(batches)
    else:
        starts = [index * settings.batch_size for index in range(len(batches))]
        val_batches = [processes.shard(val_order[start : start + len(batch)]) for start, batch in zip(starts, batches)]
    shares = [processes.shard(batch) for batch in batches]
    objective = []  # F of every draw of this process, one tensor per step (read once, at the end of the epoch)
    for index, (train_images, train_labels, val_images, val_labels) in enumerate(source.batches(shares, val_batches)):
        if settings.crop == "resized":
            train_images = resized_crop_and_flip(train_images, generator, processes=processes)
        else:
            train_images = crop_and_flip(train_images, padding, generator, processes=processes)
        if settings.color_jitter:
            train_images = color_jittered(train_images, settings.color_jitter, generator, processes)
        stats = step.step(train_images, train_labels, val_images, val_labels)
        objective.append(stats.values)
        sums += torch.stack((stats.loss.detach(), stats.accuracy.detach())) * len(train_labels)
        seen += len(batches[index])
        bar.update(1)
        if (index + 1) % _REFRESH_STEPS == 0 or index + 1 == len(batches):
            loss, correct = (sum_(processes, sums.clone()) / seen).tolist()
            check_loss(loss, epoch, index + 1)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{correct:.3f}", refresh=False)
    return {"loss": loss, "accuracy": correct, "objective": objective_summary(gather(processes, torch.cat(objective)))}
