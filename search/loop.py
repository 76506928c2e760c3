"""The search as a Python function: data on the device, epochs of a method's steps, checkpoints, export.

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
from .batches import color_jittered, crop_and_flip, resized_crop_and_flip
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
from .export import check_hub_repo, export_result, push_result
from .fingerprint import comparable_fingerprint, data_fingerprint
from .methods import MethodRun, SearchStep, method_for
from .models import build_model, synchronized_batchnorm
from .noise_floor import objective_summary
from .output_files import OutputPaths, check_not_builtin, check_output, output_paths
from .output_lock import OutputLock
from .settings import SearchInputError, SearchSettings, check_data_options, epoch_learning_rate, resolve_settings
from .streaming import MemoryBatches, StreamedBatches

_REFRESH_STEPS = 10  # steps between progress-bar updates and checks that the loss is finite


@dataclass(frozen=True)
class SearchResult:
    """What a search produced."""

    policy: Policy
    parameters: dict[str, torch.Tensor]  # the method's learned tensors (published: alpha, probabilities, ...), history.*
    paths: OutputPaths


@dataclass(frozen=True)
class _Job:
    """What every part of one search needs: its settings, where it writes, its device and processes."""

    settings: SearchSettings
    name: str
    paths: OutputPaths
    device: torch.device
    processes: Processes
    progress: bool  # shown by this process (rank 0 alone)

    def say(self, line: str) -> None:
        """A log line on stderr (above the progress bar) when progress is shown."""
        if self.progress:
            tqdm.write(line, file=sys.stderr)


@dataclass(frozen=True)
class _SearchData:
    """The searched images, split in halves, and how their batches reach the device."""

    images: LabelledImages | ImageFiles
    fingerprint: dict[str, Any]
    train_count: int
    val_count: int
    source: MemoryBatches | StreamedBatches
    how: str  # "held in memory" or how it is streamed, for the log


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
    device: str | torch.device | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    resume: bool = False,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    progress: bool = True,
) -> SearchResult:
    """Search an augmentation policy and write ``OUTPUT/NAME.json`` and ``OUTPUT/NAME.safetensors``.

    Settings left as None take the published value for ``dataset`` (see
    :mod:`dada_transforms.search.settings`). ``method`` picks the search
    (:mod:`.methods`): ``"published"``, the paper's, or ``"compact"`` (ours),
    which reads ``draws`` (per image), ``operations`` (per image) and
    ``objective``. ``output`` defaults to the user
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
    Left as None, ``top_k`` and ``export`` take the method's defaults: ``published``,
    the paper's top 25 chosen uniformly; ``compact``, all ``15 ** operations`` tuples
    with their learned weights (the exact learned distribution).
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
        method=method,
        draws=draws,
        operations=operations,
        objective=objective,
    )
    check_data_options(settings.dataset, data_path, workers)
    processes = processes_from_environment()
    device = _checked_device(settings, processes, device, timeout)
    paths = output_paths(user_preset_dir() if output is None else output, name)
    job = _Job(settings, name, paths, device, processes, progress and processes.is_main)
    with process_group(processes, job.device, timeout), ExitStack() as held:
        held.enter_context(deterministic_cudnn())  # a resumed search repeats the same convolutions
        check_agreement(processes, {  # one process started with other arguments would search something else
            **settings.to_dict(), "name": name, "data_path": data_path, "bad_images": bad_images, "download": download,
            "resume": resume, "overwrite": overwrite, "timeout": timeout, "push_to_hub": push_to_hub,
        }, "settings")
        saved = agreed(processes, lambda: _open_output(job, held, resume, overwrite, push_to_hub))
        resuming = broadcast_bytes(processes, (b"1" if saved else b"0") if processes.is_main else None) == b"1"
        data = _open_data(job, data_dir, download, bad_images, data_path, workers)
        network, run, generator = _build(job, data.images)
        start_epoch, history = _resume(job, saved, data.fingerprint, network, run) if resuming else (0, [])
        _run_epochs(job, data, network, run, generator, start_epoch, history)
        return _finish(job, data, run, history, push_to_hub)


def _checked_device(
    settings: SearchSettings, processes: Processes, device: str | torch.device | None, timeout: float
) -> torch.device:
    """This process's device, once the batch, ``timeout`` and ``sync_bn`` suit the processes (the same on each)."""
    if settings.batch_size % processes.world_size:  # the same on every process: rank 0 reports it
        raise AgreedError(
            f"batch size {settings.batch_size} (the global batch) must be a multiple of the {processes.world_size} "
            f"processes, so that each takes an equal share"
        )
    if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout < float("inf")):
        raise AgreedError(f"timeout must be a positive number of seconds, got {timeout!r}")
    device = process_device(processes, resolve_device(device))
    if settings.sync_bn and processes.distributed and device.type != "cuda":
        raise AgreedError(f"--sync-bn (SyncBatchNorm) needs CUDA devices, the search runs on {device.type}")
    return device


def _open_output(
    job: _Job, held: ExitStack, resume: bool, overwrite: bool, push_to_hub: str | None
) -> dict[str, Any] | None:
    """Check the model fits; on rank 0, check and lock the output and return the checkpoint to resume (or None)."""
    check_model_fits(job.settings.model, job.device)
    if not job.processes.is_main:
        return None
    paths = job.paths
    check_output(paths, job.name)
    check_not_builtin(paths, job.name)
    if push_to_hub is not None:
        check_hub_repo(push_to_hub)
    held.enter_context(OutputLock(paths))
    saved = checkpoint.checkpoint_to_resume(paths, job.settings, resume=resume, overwrite=overwrite)
    if saved is not None and saved["processes"] != job.processes.world_size:
        made, now = saved["processes"], job.processes.world_size
        raise SearchInputError(
            f"the checkpoint in {str(paths.checkpoint)!r} was made by {made} process{'es' if made > 1 else ''} "
            f"sharing each batch, this search has {now}: resume it with {made} (torchrun --nproc-per-node), "
            f"or run with --overwrite instead of --resume to start afresh"
        )
    if resume and saved is None:
        print(f"dada-search: nothing to resume in {str(paths.checkpoint)!r}: starting afresh", file=sys.stderr)
    return saved


def _open_data(
    job: _Job, data_dir: str | os.PathLike[str] | None, download: bool, bad_images: str, data_path: str, workers: int | None
) -> _SearchData:
    """The searched images, agreed on by every process, split in halves, and their batch source."""
    processes = job.processes
    data, train_indices, val_indices = agreed(
        processes, lambda: _split_images(job, data_dir, download, bad_images, data_path)
    )
    if data.skipped:
        job.say(f"dada-search: left out {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0]!r}")
    fingerprint = agreed(processes, lambda: data_fingerprint(data, train_indices, val_indices))  # on every process
    check_agreement(processes, comparable_fingerprint(fingerprint), "the searched data")
    train, val = data.subset(train_indices), data.subset(val_indices)
    source, how = _batch_source(job, train, val, bad_images, workers)
    return _SearchData(data, fingerprint, len(train), len(val), source, how)


def _split_images(
    job: _Job, data_dir: str | os.PathLike[str] | None, download: bool, bad_images: str, data_path: str
) -> tuple[LabelledImages | ImageFiles, np.ndarray, np.ndarray]:
    """The dataset (in memory when it fits the device beside the model, else its files) and its stratified halves."""
    settings, processes = job.settings, job.processes
    data = open_search_images(
        settings.dataset,
        data_dir,
        download=download,
        image_size=settings.image_size,
        bad_images=bad_images,
        data_path=data_path,
        processes_on_node=processes.local_world_size,
        device_budget=device_data_budget(settings.model, job.device),
    )
    if isinstance(data, LabelledImages):  # held on the device beside the network
        check_model_fits(settings.model, job.device, data_bytes=data.images.numel() * data.images.element_size())
    try:
        train_indices, val_indices = split_halves(data.labels)
    except ValueError as error:
        raise SearchInputError(f"cannot split the {len(data)} searched images in two stratified halves: {error}") from None
    if len(train_indices) < processes.world_size:
        raise SearchInputError(
            f"search-train holds {len(train_indices)} images, fewer than the {processes.world_size} processes"
        )
    return data, train_indices, val_indices


def _batch_source(
    job: _Job,
    train: LabelledImages | ImageFiles,
    val: LabelledImages | ImageFiles,
    bad_images: str,
    workers: int | None,
) -> tuple[MemoryBatches | StreamedBatches, str]:
    """Where the steps' batches come from, and how, in words: streamed from image files, or held on the device."""
    if isinstance(train, ImageFiles):
        source = StreamedBatches(
            train, val, job.device, workers=workers, bad_images=bad_images, on_skip=lambda line: job.say(f"dada-search: {line}")
        )
        return source, f"streamed by {source.workers} decoding worker(s) per process"
    if workers is not None:
        job.say("dada-search: --workers applies to streamed data only; these images are held in memory")
    return MemoryBatches(train.to(job.device), val.to(job.device)), "held in memory"


def _build(job: _Job, data: LabelledImages | ImageFiles) -> tuple[torch.nn.Module, MethodRun, torch.Generator]:
    """The network (initialised from the seed), the method's run on it, and the search's generator."""
    settings = job.settings
    torch.manual_seed(settings.seed)
    network = build_model(settings.model, data.num_classes).to(job.device)
    if settings.sync_bn and job.processes.distributed:
        network = synchronized_batchnorm(network)
    generator = torch.Generator(device=job.device)
    run = method_for(settings).build(
        settings, network, mean=data.mean, std=data.std, generator=generator, processes=job.processes
    )
    return network, run, generator


def _resume(
    job: _Job, saved: dict[str, Any] | None, fingerprint: dict[str, Any], network: torch.nn.Module, run: MethodRun
) -> tuple[int, list[dict[str, Any]]]:
    """Every process restores rank 0's checkpoint (``saved``, read by rank 0); returns the completed epochs and history."""
    processes = job.processes
    files = lambda folder: [checkpoint.INDEX_FILE, saved["tensors"]]  # noqa: E731 (rank 0's checkpoint)
    limit = checkpoint.max_tensor_file_bytes(network, run.parameters)
    with shared_folder(processes, job.paths.checkpoint, files, limit) as folder:

        def restore() -> tuple[int, list[dict[str, Any]]]:
            index = saved if processes.is_main else checkpoint.read_checkpoint(folder, job.settings)
            return checkpoint.restore_checkpoint(folder, index, fingerprint, network, run.parameters, run.step)

        return agreed(processes, restore)


def _run_epochs(
    job: _Job,
    data: _SearchData,
    network: torch.nn.Module,
    run: MethodRun,
    generator: torch.Generator,
    start_epoch: int,
    history: list[dict[str, Any]],
) -> None:
    """The epochs from ``start_epoch`` on, with a progress bar; appends to ``history`` and checkpoints each epoch."""
    settings, processes = job.settings, job.processes
    steps_per_epoch = len(_batch_sizes(data.train_count, settings.batch_size, processes.world_size))
    bar = tqdm(
        total=settings.epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        disable=not job.progress,
        file=sys.stderr,
        unit="step",
        dynamic_ncols=True,
    )
    job.say(
        f"dada-search: {settings.dataset}, {data.train_count} search-train + {data.val_count} search-val images of "
        f"{settings.image_size}px ({data.how}), {settings.model}, {steps_per_epoch} steps/epoch on {job.device}"
        + (f", {processes.world_size} processes sharing each batch" if processes.distributed else "")
        + (f", resuming after epoch {start_epoch}" if start_epoch else ""),
    )
    with bar:
        for epoch in range(start_epoch, settings.epochs):
            try:
                stats = _run_epoch(
                    run.step, data.source, data.train_count, data.val_count, settings, epoch, generator, bar, processes
                )
                check_parameters({"network": network, "augmentation": run.parameters}, epoch)
            except SearchDivergedError as error:
                raise diverged(error, settings, job.paths.checkpoint, epoch) from None
            history.append({"epoch": epoch + 1, **stats, **run.snapshot()})
            job.say(
                f"epoch {epoch + 1}/{settings.epochs}: loss {stats['loss']:.4f}, accuracy {stats['accuracy']:.4f}; "
                f"{run.summary(5)}"
            )
            if processes.is_main:
                _save_checkpoint(job, epoch + 1, network, run, history, data.fingerprint)


def _save_checkpoint(
    job: _Job, epochs: int, network: torch.nn.Module, run: MethodRun, history: list[dict[str, Any]], fingerprint: dict[str, Any]
) -> None:
    """The checkpoint after ``epochs`` completed epochs (rank 0 only)."""
    checkpoint.save_checkpoint(
        job.paths.checkpoint,
        checkpoint.SearchState(
            epoch=epochs,
            settings=job.settings,
            model=network.state_dict(),
            augmentation=run.parameters.tensors(),
            step=run.step.state_dict(),
            history=history,
            data=fingerprint,
            processes=job.processes.world_size,
        ),
    )


def _finish(job: _Job, data: _SearchData, run: MethodRun, history: list[dict[str, Any]], push_to_hub: str | None) -> SearchResult:
    """The noise floor, then the result: exported (rank 0 writes it, removes the checkpoint, pushes it) and returned."""
    settings, processes, paths = job.settings, job.processes, job.paths
    floor = run.noise_floor(
        [entry["objective"] for entry in history], _batch_sizes(data.train_count, settings.batch_size, processes.world_size)
    )
    outside = run.outside(floor)
    metadata = {
        "search": settings.to_dict(),
        "searched_images": len(data.images),
        "history": history,
        "noise_floor": floor.to_dict(),
        "outside_noise_floor": outside,
    }

    def export() -> tuple[Policy, dict[str, torch.Tensor]]:
        result = export_result(
            run.parameters, paths, job.name, settings.top_k, metadata, write=processes.is_main,
            weighted=settings.export == "weighted", history_shapes=method_for(settings).history_shapes,
        )
        if processes.is_main:
            shutil.rmtree(paths.checkpoint, ignore_errors=True)
            job.say(f"wrote {paths.policy} and {paths.parameters}")
            if push_to_hub is not None:
                push_result(paths, push_to_hub)
                job.say(f"pushed to the Hub: {push_to_hub}")
            job.say(f"dada-search: {run.outside_line(outside)}")
        return result

    policy, parameters = agreed(processes, export)
    return SearchResult(policy, parameters, paths)


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
    step: SearchStep,
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
