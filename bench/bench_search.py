"""Speed of the DADA search step in the published reduced CIFAR-10 setting, on synthetic data.

The setting: WRN-40-2, batch 128, 20 epochs over 4,000 images split 50/50, so
2,000 search-train images = 16 steps per epoch = 320 steps. The data here is
random uint8 of the same shape, already on the device, so nothing is
downloaded. Each timed search step includes the device-side crop and flip
of the train and validation batches, as in ``dada-search``.

The anchor is a plain SGD training step (crop, flip, normalise, forward,
backward, step) of the same model and batch, timed in the same run: the two
kinds of step alternate and each is timed alone, so that a machine whose
load changes affects both; medians are reported.

Every method is timed against that anchor in the same run, the steps of all of them
alternating with the anchor's: ``published`` per batch and per sample (the paper's; its
floor is 4 passes: forward and backward at w, validation at w', w+ and w-), and
``compact`` (ours) with its ``unrolled`` and ``adversarial`` objectives, K draws per
image (a K times larger augmented batch). Then the peak memory of one compact step for
K = 2, 4, 8 draws per image (and of the plain training step, one image per row): on
CUDA ``torch.cuda.max_memory_allocated`` over the step; on the CPU the rise of the
resident size during the first step (sampled every 0.5 ms), each K in a fresh process
(tracemalloc does not see torch's allocations). ``--quick``: a small network
and batch (about a minute on two CPU cores).

``--variance`` measures instead the per-parameter variance of the sub-policy
weight (alpha) and probability (p) gradient estimates of each estimator, on a
real short search: scikit-learn's 1,797 handwritten digits (offline, upscaled
to 16 px RGB), WRN-10-1, batch 32, the control variate trained as RELAX trains
it. At a few points of the search (the same weights and parameters), several
random batches are each augmented by many independent draws; each draw's
objective values feed every estimator, so the estimators are compared on
identical draws. The variance over one batch's draws (the part an estimator
changes) is averaged over the batches, and its ratio to ``c = 0`` comes with a
90% bootstrap interval over the batches (the noise of the comparison):

- ``relax``: RELAX with the trained control variate c_phi;
- ``c = 0``: RELAX with c = 0 (``--estimator score-function``);
- ``authors``: the authors' effective estimator, computed as their code does
  (F times the autograd score of every Bernoulli and the categorical log-prob);
- ``baseline``: the default (the chosen sub-policy's bits, minus the other
  draws' shrunk mean with per-sample sampling, or the step's running baseline
  of the search's earlier steps with per-batch sampling).

``--variance`` measures both samplings unless ``--sampling`` names one.

Usage::

    python bench/bench_search.py                      # CPU, and CUDA when available
    python bench/bench_search.py --quick --device cpu # every method, small network, about a minute
    python bench/bench_search.py --device cuda --steps 50
    python bench/bench_search.py --variance --device cpu
    python bench/bench_search.py --nproc 2 --stream --device cpu   # data-parallel: see bench/search_scaling.py
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.nn.functional as F

from dada_transforms.search import relax
from dada_transforms.search.augmentation import AugmentationParameters
from dada_transforms.search.batches import crop_and_flip
from dada_transforms.search.bilevel import BilevelSearchStep
from dada_transforms.search.compact import CompactAugmentation
from dada_transforms.search.compact_step import CompactSearchStep
from dada_transforms.search.data import split_halves
from dada_transforms.search.device_checks import resolve_device
from dada_transforms.search.models import build_model

SEARCHED_IMAGES = 4000
EPOCHS = 20
GOAL_SECONDS = 60.0
PAPER_SECONDS = 0.1 * 3600
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(device: torch.device, function, index: int) -> float:
    _synchronize(device)
    start = time.perf_counter()
    function(index)
    _synchronize(device)
    return time.perf_counter() - start


METHODS = ("published per-batch", "published per-sample", "compact unrolled", "compact adversarial")


def _search_step(method: str, model_name: str, device: torch.device, generator: torch.Generator, draws: int):
    """A fresh network and the search step of ``method`` (one of :data:`METHODS`)."""
    torch.manual_seed(0)
    model = build_model(model_name, 10).to(device)
    options = {"lr": 0.1, "weight_decay": 2e-4, "cutout": 16, "mean": MEAN, "std": STD, "generator": generator}
    family, variant = method.split()
    if family == "published":
        return BilevelSearchStep(model, AugmentationParameters(temperature=0.5).to(device), sampling=variant, **options)
    return CompactSearchStep(model, CompactAugmentation().to(device), draws=draws, objective=variant, **options)


def _data(device: torch.device, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    images = torch.randint(0, 256, (SEARCHED_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=generator, device=device)
    labels = torch.randint(0, 10, (SEARCHED_IMAGES,), generator=generator, device=device)
    half = SEARCHED_IMAGES // 2
    return images[:half], labels[:half], images[half:], labels[half:]


def _plain_step(model_name: str, device: torch.device, generator: torch.Generator) -> Callable:
    """A plain training step (crop, flip, normalise, forward, backward, SGD) as ``step(images, labels)``."""
    torch.manual_seed(0)
    anchor = build_model(model_name, 10).to(device)
    optimizer = torch.optim.SGD(anchor.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        inputs = (crop_and_flip(images, 4, generator).float() / 255 - mean) / std
        loss = F.cross_entropy(anchor(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench(device: torch.device, model_name: str, batch_size: int, steps: int, warmup: int, draws: int) -> None:
    """Every method's step against the plain training step, all alternating in one run; medians."""
    generator = torch.Generator(device=device).manual_seed(0)
    train_images, train_labels, val_images, val_labels = _data(device, generator)
    half = len(train_images)
    steps_per_epoch = math.ceil(half / batch_size)

    def batch(index: int) -> slice:
        start = (index % steps_per_epoch) * batch_size
        return slice(start, min(start + batch_size, half))

    plain = _plain_step(model_name, device, generator)
    calls = {"plain training step": lambda index: plain(train_images[batch(index)], train_labels[batch(index)])}
    for method in METHODS:
        search_step = _search_step(method, model_name, device, generator, draws)

        def search_step_call(index: int, search_step=search_step) -> None:
            part = batch(index)
            search_step.step(
                crop_and_flip(train_images[part], 4, generator),
                train_labels[part],
                crop_and_flip(val_images[part], 4, generator),
                val_labels[part],
            )

        calls[method] = search_step_call
    times = _alternated(device, calls, steps, warmup)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); model {model_name}, batch {batch_size}, compact K = {draws} draws per image; "
          f"{steps} timed steps each after {warmup} warm-up, all alternating")
    plain_times = times["plain training step"]
    total_steps = EPOCHS * steps_per_epoch
    for method, method_times in times.items():
        ratios = [step / anchor for step, anchor in zip(method_times, plain_times)]
        seconds = statistics.median(method_times)
        print(f"  {method:<22} median {seconds * 1000:9.1f} ms  = {statistics.median(ratios):5.2f}x the plain step "
              f"(per pair {', '.join(f'{ratio:.2f}' for ratio in ratios)}); "
              f"{EPOCHS} epochs x {steps_per_epoch} steps: {total_steps * seconds:.0f} s")


def _alternated(device: torch.device, calls: dict[str, Callable], steps: int, warmup: int) -> dict[str, list[float]]:
    """Per-call seconds of each function, called in turn (so a changing machine load hits all)."""
    for index in range(warmup):
        for function in calls.values():
            function(index)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(steps):
        for name, function in calls.items():
            times[name].append(_seconds(device, function, index))
    return times


def _peak_bytes(device_name: str, model_name: str, batch_size: int, method: str, draws: int) -> int:
    """The rise of the peak memory over one first step of ``method`` (or ``"plain"``), ``draws`` per image for compact."""
    device = resolve_device(device_name)
    generator = torch.Generator(device=device).manual_seed(0)
    train_images, train_labels, val_images, val_labels = (tensor[:batch_size] for tensor in _data(device, generator))
    search_step = None if method == "plain" else _search_step(method, model_name, device, generator, draws)
    plain = _plain_step(model_name, device, generator) if method == "plain" else None

    def call() -> None:
        if search_step is not None:
            search_step.step(train_images, train_labels, val_images, val_labels)
        else:
            plain(train_images, train_labels)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _peak_rss_rise(call)


def _peak_rss_rise(call: Callable[[], None]) -> int:
    """The largest resident size (``/proc/self/statm``, Linux) reached during ``call()``, minus the size before it."""
    page = resource.getpagesize()

    def resident() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    before, peak, done = resident(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        call()
    finally:
        done.set()
        watcher.join()
    return max(peak[0], resident()) - before


def memory_report(device: torch.device, model_name: str, batch_size: int, draws_list: tuple[int, ...]) -> None:
    """Peak memory of one compact step per K (and of the plain and published per-sample steps), each in a fresh process.

    On the CPU the first step's rise includes one-time allocations (an upper bound).
    """
    how = "max_memory_allocated" if device.type == "cuda" else "rise of the resident size over a first step, fresh process each"
    print(f"peak memory of one step ({how}); model {model_name}, batch {batch_size}:")
    context = multiprocessing.get_context("spawn")
    runs = [("plain", 0), ("published per-sample", 0)] + [("compact unrolled", draws) for draws in draws_list]
    for method, draws in runs:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            peak = pool.submit(_peak_bytes, str(device), model_name, batch_size, method, draws).result()
        label = "plain training step" if method == "plain" else method + (f", K = {draws}" if draws else "")
        print(f"  {label:<28} {peak / 2**20:9.1f} MiB")


def _digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 real 8x8 handwritten digits as uint8 RGB ``[N, 3, size, size]`` (bilinear upscaling)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = (images * 255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, torch.tensor(digits.target, dtype=torch.long)


def _authors_estimate(values: torch.Tensor, alpha: torch.Tensor, probabilities: torch.Tensor, discrete) -> tuple:
    """The authors' effective update: F times d log P(b) by autograd through torch.distributions, every bit scored."""
    theta = probabilities.clamp(relax.BOUNDARY, 1 - relax.BOUNDARY)
    theta = probabilities + (theta - probabilities).detach()
    log_probability = (
        torch.distributions.Bernoulli(logits=theta.logit()).log_prob(discrete.bits).sum((1, 2))
        + torch.distributions.Categorical(logits=alpha.log_softmax(0)).log_prob(discrete.sub_policy)
    )
    return torch.autograd.grad((values * log_probability).mean(), (alpha, probabilities))


def _ratio_interval(values: torch.Tensor, reference: torch.Tensor, seed: int) -> tuple[float, float]:
    """5% and 95% bootstrap quantiles over the batches of ``sum(values) / sum(reference)`` (paired per batch)."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, values.shape[0], (2000, values.shape[0]), generator=generator)
    ratios = values[picks].sum(1) / reference[picks].sum(1)
    low, high = ratios.quantile(torch.tensor([0.05, 0.95], dtype=ratios.dtype)).tolist()
    return low, high


def variance_report(device: torch.device, sampling: str, batches: int, draws: int, points: int, seed: int) -> None:
    """Per-parameter variance of each estimator's alpha and p estimates at ``points`` moments of a short search.

    At each point ``batches`` random batches are augmented by ``draws`` draws each: the variance over the
    draws of one batch (what the estimators change), mean over the entries, averaged over the batches.
    """
    images, labels = _digits(16)
    train_indices, val_indices = split_halves(labels)
    train_images, train_labels = images[train_indices].to(device), labels[train_indices].to(device)
    val_images, val_labels = images[val_indices].to(device), labels[val_indices].to(device)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    torch.manual_seed(seed)
    model = build_model("wrn-10-1", 10).to(device)
    augmentation = AugmentationParameters(temperature=0.5).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    step = BilevelSearchStep(
        model, augmentation, lr=0.1, weight_decay=2e-4, cutout=8, mean=mean, std=std,
        sampling=sampling, estimator="relax", generator=generator,
    )
    batch, steps_per_epoch = 32, len(train_indices) // 32

    def random_batch() -> slice:
        start = torch.randint(0, len(train_indices) - batch, (1,), generator=generator, device=device).item()
        return slice(start, start + batch)

    names = ("relax (trained c)", "c = 0", "authors' effective", "baseline (default)")
    print(f"variance of the gradient estimates, {sampling} sampling, {batches} batches x {draws} draws per point; "
          f"digits 16 px, WRN-10-1, batch {batch}; phi trained by RELAX during the search; device {device}")
    print("  mean over the entries of the variance over one batch's draws, averaged over the batches; "
          "(ratio to c = 0, 90% bootstrap interval over the batches)")
    print(f"  {'step':>5} {'param':>5} " + " ".join(f"{name:>31}" for name in names))
    for point in range(points):
        alpha, probabilities = augmentation.alpha, augmentation.probabilities
        running = step.running_baseline.state_dict()  # the measuring draws must not enter it
        per_batch = {name: ([], []) for name in names}  # per batch: mean over entries of the variance over draws
        for _ in range(batches):
            part = random_batch()
            crop = crop_and_flip(train_images[part], 2, generator)
            estimates = {name: ([], []) for name in names}
            for _ in range(draws):
                sample = augmentation.sample(batch, sampling == "per-sample", generator)
                values = step.architecture_gradients(
                    crop, train_labels[part], val_images[part], val_labels[part], sample
                )["values"]
                step.running_baseline.load_state_dict(running)
                baselines = step.running_baseline.value(values).expand_as(values)
                discrete = sample.discrete
                results = [
                    relax.relax_gradients(values, alpha, probabilities, discrete, augmentation.control_variate, 0.5),
                    relax.score_function_gradients(values, alpha, probabilities, discrete),
                    relax.GradientEstimate(*_authors_estimate(values, alpha, probabilities, discrete)),
                    relax.baseline_gradients(values, baselines, alpha, probabilities, discrete),
                ]
                for name, result in zip(names, results):
                    estimates[name][0].append(result.alpha.detach())
                    estimates[name][1].append(result.probabilities.detach())
            for name in names:
                for index in range(2):
                    per_batch[name][index].append(torch.stack(estimates[name][index]).var(0).mean().item())
        done = point * steps_per_epoch
        for index, parameter in enumerate(("alpha", "p")):
            variances = {name: torch.tensor(per_batch[name][index], dtype=torch.float64) for name in names}
            reference = variances["c = 0"]
            cells = []
            for name in names:
                low, high = _ratio_interval(variances[name], reference, seed)
                value = variances[name].mean().item()
                cells.append(f"{value:9.2e} ({value / reference.mean().item():5.3f}x, {low:5.3f}-{high:5.3f})")
            print(f"  {done:>5} {parameter:>5} {' '.join(cells)}")
        for _ in range(steps_per_epoch):  # train on: one epoch of RELAX steps to the next point
            part = random_batch()
            step.step(crop_and_flip(train_images[part], 2, generator), train_labels[part], val_images[part], val_labels[part])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--model", help="network (default wrn-40-2; with --nproc wrn-16-2)")
    parser.add_argument("--batch-size", type=int, help="(global) batch (default 128; with --nproc 64)")
    parser.add_argument("--steps", type=int, help="timed steps (default 3 on CPU, 32 on CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 1 on CPU, 5 on CUDA)")
    parser.add_argument("--sampling", choices=("per-batch", "per-sample"), default="per-batch", help="--variance: the sampling")
    parser.add_argument("--quick", action="store_true", help="wrn-10-1, batch 16, 2 timed steps (about a minute on a CPU)")
    parser.add_argument("--k", type=int, default=4, help="timing: compact's draws per image (default 4)")
    parser.add_argument("--variance", action="store_true", help="measure the estimators' variances instead (see above)")
    parser.add_argument("--batches", type=int, default=8, help="--variance: batches per measuring point (default 8)")
    parser.add_argument("--draws", type=int, default=12, help="--variance: draws per batch (default 12)")
    parser.add_argument("--points", type=int, default=3, help="--variance: measuring points, an epoch apart (default 3)")
    parser.add_argument("--nproc", type=int, help="time real data-parallel searches on 1 and N processes instead (torchrun)")
    parser.add_argument("--stream", action="store_true", help="--nproc: also with the images streamed from files")
    parser.add_argument("--images", type=int, default=1024, help="--nproc: images in the synthetic image folder (default 1024)")
    parser.add_argument("--image-size", type=int, default=32, help="--nproc: image size searched (default 32)")
    parser.add_argument("--epochs", type=int, default=2, help="--nproc: epochs per search, the last one timed (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="--nproc --stream: decoding workers per process (default 1)")
    args = parser.parse_args()
    args.sampling_given = any(argument.startswith("--sampling") for argument in sys.argv[1:])
    if args.nproc is not None:
        from search_scaling import estimate_published_imagenet, memory_sweep, scaling_report

        device = "cuda" if args.device == "cuda" else "cpu"
        overhead = scaling_report(args.nproc, args.stream, device, args.images, args.image_size,
                                  args.model or "wrn-16-2", args.batch_size or 64, args.epochs, args.workers)
        if args.stream:
            memory_sweep(args.images, args.workers)
        estimate_published_imagenet(device, overhead if args.nproc > 1 else None)
        return
    if args.variance:
        device = resolve_device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
        samplings = [args.sampling] if args.sampling_given else ["per-batch", "per-sample"]
        for sampling in samplings:
            variance_report(device, sampling, args.batches, args.draws, args.points, seed=0)
        return
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("CUDA is not available here: CPU only")
        devices.remove("cuda")
    for device in devices:
        on_cuda = device == "cuda"
        steps = args.steps if args.steps is not None else (32 if on_cuda else 2 if args.quick else 3)
        warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
        model = args.model or ("wrn-10-1" if args.quick else "wrn-40-2")
        batch_size = args.batch_size or (16 if args.quick else 128)
        bench(resolve_device(device), model, batch_size, steps, warmup, args.k)
        memory_report(resolve_device(device), model, batch_size, (2, 4, 8))


if __name__ == "__main__":
    main()
