"""dada-search's two data paths: images decoded into memory, or listed and streamed batch by batch."""

from __future__ import annotations

import contextlib
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dada_transforms.search import data as data_module
from dada_transforms.search.data import (
    choose_data_path,
    in_memory_limit,
    list_search_images,
    load_search_images,
    open_search_images,
    reduced_imagenet_classes,
    split_halves,
)
from dada_transforms.search.settings import DATA_PATHS
from dada_transforms.search.fingerprint import FINGERPRINT_KEYS, data_fingerprint, fingerprint_differences
from dada_transforms.search.settings import SearchInputError
from dada_transforms.search.streaming import MemoryBatches, StreamedBatches

CPU = torch.device("cpu")


def _epoch(train_count: int, val_count: int, batch_size: int, seed: int, fixed: bool) -> tuple[list, list]:
    """One epoch's index batches, as the search draws them (fresh or fixed val batches)."""
    generator = torch.Generator().manual_seed(seed)
    train_batches = list(torch.randperm(train_count, generator=generator).split(batch_size))
    val_order = torch.randperm(val_count, generator=generator)
    if fixed:
        return train_batches, [val_order[:batch_size]] * len(train_batches)
    starts = range(0, len(train_batches) * batch_size, batch_size)
    return train_batches, [val_order[start : start + len(batch)] for start, batch in zip(starts, train_batches)]


def _both_paths(root, image_size: int = 16, bad_images: str = "fail"):
    loaded = load_search_images("imagefolder", root, image_size=image_size, bad_images=bad_images)
    listed = list_search_images("imagefolder", root, image_size=image_size, bad_images=bad_images)
    return loaded, listed


def _truncate(path) -> None:
    """Keep a PNG's valid header, cut its body: Pillow opens it, then fails to decode it."""
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_are_the_memory_batches(image_tree, workers: int) -> None:
    loaded, listed = _both_paths(image_tree)
    train_indices, val_indices = split_halves(loaded.labels)
    assert np.array_equal(split_halves(listed.labels)[0], train_indices)
    memory = MemoryBatches(loaded.subset(train_indices), loaded.subset(val_indices))
    streamed = StreamedBatches(listed.subset(train_indices), listed.subset(val_indices), CPU, workers=workers)
    for epoch, fixed in ((0, False), (1, True), (2, True), (3, False)):  # fixed twice: the cached val batch
        train_batches, val_batches = _epoch(len(train_indices), len(val_indices), 5, epoch, fixed)
        steps = 0
        for ours, theirs in zip(streamed.batches(train_batches, val_batches), memory.batches(train_batches, val_batches)):
            assert [tensor.dtype for tensor in ours] == [torch.uint8, torch.int64] * 2
            assert ours[0].shape[1:] == (3, 16, 16)
            assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
            steps += 1
        assert steps == len(train_batches) == 3


class _FakeStream:
    """Stands for a CUDA stream: records what waits on what."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def wait_stream(self, other: _FakeStream) -> None:
        self.log.append(f"{self.name} waits for {other.name}")


def test_each_step_waits_for_its_own_copy_and_the_next_copy_follows_the_step(image_tree, monkeypatch) -> None:
    """The CUDA stream protocol, with fake streams on the CPU: wait for copy k, run step k, then decode and copy k+1."""
    log: list[str] = []
    listed = list_search_images("imagefolder", image_tree, image_size=16)
    train_indices, val_indices = split_halves(listed.labels)
    source = StreamedBatches(listed.subset(train_indices), listed.subset(val_indices), CPU, workers=0)
    source._copy_stream = _FakeStream("copy stream", log)  # as built for a CUDA device
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream("step stream", log))

    @contextlib.contextmanager
    def on_stream(stream):
        log.append(f"copy on {stream.name}")
        yield

    monkeypatch.setattr(torch.cuda, "stream", on_stream)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda tensor, stream: log.append(f"used on {stream.name}"))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda tensor: tensor)
    real_decode = data_module.DecodedFiles.__getitem__

    def decode(files, index):
        if not log or log[-1] != "decode":
            log.append("decode")
        return real_decode(files, index)

    monkeypatch.setattr(data_module.DecodedFiles, "__getitem__", decode)
    for step, _ in enumerate(source.batches(*_epoch(len(train_indices), len(val_indices), 5, 0, False))):
        log.append(f"step {step}")
    one_step = ["decode", "copy on copy stream", "step stream waits for copy stream"] + ["used on step stream"] * 2
    assert log == [*one_step, "step 0", *one_step, "step 1", *one_step, "step 2"]


def test_streaming_workers_persist_from_one_epoch_to_the_next(image_tree, tmp_path, monkeypatch) -> None:
    listed = list_search_images("imagefolder", image_tree, image_size=16)
    train_indices, val_indices = split_halves(listed.labels)
    source = StreamedBatches(listed.subset(train_indices), listed.subset(val_indices), CPU, workers=1)
    real_decode = data_module.DecodedFiles.__getitem__
    pids = tmp_path / "pids"

    def decode(files, index):  # runs in the (forked) worker
        with open(pids, "a") as record:
            record.write(f"{os.getpid()}\n")
        return real_decode(files, index)

    monkeypatch.setattr(data_module.DecodedFiles, "__getitem__", decode)
    for epoch in range(2):
        assert len(list(source.batches(*_epoch(len(train_indices), len(val_indices), 5, epoch, False)))) == 3
    assert len(set(pids.read_text().split())) == 1


def test_both_paths_list_the_same_files_statistics_and_fingerprint(image_tree, monkeypatch) -> None:
    loaded, listed = _both_paths(image_tree)
    assert (loaded.mean, loaded.std) == (listed.mean, listed.std)
    assert loaded.files.paths == listed.paths and loaded.classes == listed.classes == ("class0", "class1", "class2")
    assert torch.equal(loaded.labels, listed.labels) and listed.image_size == 16 and len(listed) == 24
    in_memory = open_search_images("imagefolder", image_tree, image_size=16, data_path="memory")
    assert torch.equal(in_memory.images, loaded.images) and in_memory.skipped == loaded.skipped == ()
    halves = split_halves(loaded.labels)
    fingerprint = data_fingerprint(loaded, *halves)
    assert tuple(fingerprint) == FINGERPRINT_KEYS and fingerprint == data_fingerprint(listed, *halves)

    monkeypatch.setattr(data_module, "STATISTICS_SAMPLE", 5)  # statistics of 5 evenly spaced images, in both paths
    sampled_loaded, sampled_listed = _both_paths(image_tree)
    assert (sampled_loaded.mean, sampled_loaded.std) == (sampled_listed.mean, sampled_listed.std)
    assert sampled_loaded.mean != loaded.mean


def test_fingerprint_follows_the_files_not_their_folder(image_tree, tmp_path) -> None:
    listed = list_search_images("imagefolder", image_tree, image_size=16)
    halves = split_halves(listed.labels)
    before = data_fingerprint(listed, *halves)
    root = shutil.copytree(image_tree, tmp_path / "moved")  # the same files in another folder: the same data
    assert data_fingerprint(load_search_images("imagefolder", root, image_size=16), *halves) == before
    changed = root / "class1" / "3.png"
    Image.new("RGB", (30, 30), (1, 2, 3)).save(changed)  # another image, another size in bytes
    after = data_fingerprint(load_search_images("imagefolder", root, image_size=16), *halves)
    assert fingerprint_differences(before, after) == "the contents differ"
    shutil.copyfile(image_tree / "class1" / "3.png", changed)
    moved = list_search_images("imagefolder", root, image_size=16)
    assert data_fingerprint(moved, *halves) == before
    content = bytearray(changed.read_bytes())
    content[-20] ^= 1  # the same size, other bytes (the fingerprint reads the files when it is made)
    changed.write_bytes(bytes(content))
    assert fingerprint_differences(before, data_fingerprint(moved, *halves)) == "the contents differ"


def test_reduced_imagenet_lists_what_it_loads(tmp_path, monkeypatch) -> None:
    """A stand-in ImageNet (1,000 classes of 2 files) on disk; a draw of 1,000 (one per class) keeps 120 files."""
    kept = set(reduced_imagenet_classes())
    wnids = [f"n{index:08d}" for index in range(1000)]
    torch.save(({wnid: (f"class {wnid}",) for wnid in wnids}, []), tmp_path / "meta.bin")
    for index, wnid in enumerate(wnids):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        for number in range(2):
            path = tmp_path / "train" / wnid / f"{number}.png"
            if index in kept:  # only the 120 classes' files are ever decoded
                Image.new("RGB", (6, 5), (index % 256, number * 90, 40)).save(path)
            else:
                path.write_bytes(b"")
    monkeypatch.setitem(data_module.REDUCED_SIZES, "reduced-imagenet", 1000)
    loaded = load_search_images("reduced-imagenet", tmp_path, image_size=4)
    listed = list_search_images("reduced-imagenet", tmp_path, image_size=4)
    assert loaded.files.paths == listed.paths and len(listed) == 120
    assert torch.equal(loaded.labels, listed.labels) and int(listed.labels.max()) == 119
    assert loaded.classes == listed.classes == tuple(wnids[index] for index in sorted(kept))
    assert (loaded.mean, loaded.std) == (listed.mean, listed.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert data_fingerprint(loaded, [0], [1]) == data_fingerprint(listed, [0], [1])


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_streamed_file_is_named_in_one_line(image_tree, tmp_path, workers: int) -> None:
    root = shutil.copytree(image_tree, tmp_path / "tree")
    listed = list_search_images("imagefolder", root, image_size=16)
    bad = root / "class2" / "5.png"
    _truncate(bad)
    streamed = StreamedBatches(listed, listed, CPU, workers=workers)
    everything = [torch.arange(len(listed))]
    with pytest.raises(SearchInputError, match=rf"^cannot read image '{bad}' \(.*truncated.*\); fix or remove it") as error:
        list(streamed.batches(everything, everything))
    assert "\n" not in str(error.value) and error.value.__cause__ is None
    with pytest.raises(SearchInputError, match=rf"cannot read image '{bad}'"):  # and in the statistics sample
        list_search_images("imagefolder", root, image_size=16)


def test_skip_replaces_an_unreadable_streamed_file_by_another_of_its_batch(image_tree, tmp_path) -> None:
    root = shutil.copytree(image_tree, tmp_path / "tree")
    listed = list_search_images("imagefolder", root, image_size=16)
    reference = load_search_images("imagefolder", root, image_size=16)
    bad = root / "class1" / "0.png"
    position = listed.paths.index(str(bad))
    _truncate(bad)
    messages = []
    streamed = StreamedBatches(listed, listed, CPU, workers=0, bad_images="skip", on_skip=messages.append)
    train_batch = torch.tensor([position, position + 1, 2])
    for _ in range(2):  # two epochs: said once
        ((train_images, train_labels, val_images, val_labels),) = streamed.batches([train_batch], [train_batch])
        for images, labels in ((train_images, train_labels), (val_images, val_labels)):  # by the next image of its part
            assert torch.equal(images[0], reference.images[position + 1]) and labels[0] == reference.labels[position + 1]
            assert torch.equal(images[1:], reference.images[[position + 1, 2]])
    assert streamed.skipped == [str(bad)] and len(messages) == 1
    assert messages[0].startswith(f"cannot read image '{bad}' (") and "another image of its batch" in messages[0]
    with pytest.warns(UserWarning, match="using another image of its batch"):
        list(StreamedBatches(listed, listed, CPU, workers=0, bad_images="skip").batches([train_batch], [train_batch]))

    skipping = list_search_images("imagefolder", root, image_size=16, bad_images="skip")  # found in the sample: left out
    assert skipping.skipped == (str(bad),) and len(skipping) == 23
    loaded = load_search_images("imagefolder", root, image_size=16, bad_images="skip")
    assert (loaded.mean, loaded.std) == (skipping.mean, skipping.std) and loaded.files.paths == skipping.paths


def test_choose_data_path() -> None:
    assert DATA_PATHS == ("auto", "memory", "stream")
    assert choose_data_path("imagefolder", 10_000, 64, "auto") == "memory"
    assert choose_data_path("imagenet", 1_281_167, 224, "auto") == "stream"  # 193 GB decoded
    fits = in_memory_limit() // (3 * 224 * 224)
    assert choose_data_path("reduced-imagenet", fits, 224, "auto") == "memory"
    assert choose_data_path("reduced-imagenet", fits, 224, "auto", processes_on_node=2) == "stream"
    assert choose_data_path("imagenet", 1_281_167, 224, "memory") == "memory"
    assert choose_data_path("imagefolder", 10, 32, "stream") == "stream"
    assert choose_data_path("cifar10", 50_000, 32, "auto") == "memory"
    with pytest.raises(SearchInputError, match="streaming applies to imagenet, reduced-imagenet and imagefolder"):
        choose_data_path("reduced-cifar10", 4000, 32, "stream")
    with pytest.raises(SearchInputError, match="streaming applies to"):
        list_search_images("svhn", None, image_size=32)
    with pytest.raises(SearchInputError, match="data path must be one of auto, memory, stream, got 'disk'"):
        choose_data_path("imagefolder", 10, 32, "disk")


def test_auto_data_path_on_a_gpu_sizes_the_images_against_the_device(monkeypatch) -> None:
    """A 16 GiB host limit, a 16 GiB GPU with 6 GiB free: the images held on the GPU decide (memory figures faked)."""
    from dada_transforms.search.device_checks import check_model_fits, device_data_budget

    gib = 1 << 30
    monkeypatch.setattr(data_module, "in_memory_limit", lambda: 16 * gib)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6 * gib, 16 * gib))
    gpu = torch.device("cuda", 0)
    budget = device_data_budget("wrn-10-1", gpu)
    assert 2.9 * gib < budget < 3 * gib  # half of what the network's training state leaves free
    assert device_data_budget("wrn-10-1", CPU) is None  # the host's limit alone
    image_bytes = 3 * 224 * 224
    assert choose_data_path("imagefolder", 30_000, 224, "auto") == "memory"  # 4.5 GB: fits the host
    assert choose_data_path("imagefolder", 30_000, 224, "auto", device_budget=budget) == "stream"
    assert choose_data_path("imagefolder", budget // image_bytes, 224, "auto", device_budget=budget) == "memory"
    assert choose_data_path("imagefolder", 30_000, 224, "memory", device_budget=budget) == "memory"  # as asked
    check_model_fits("wrn-10-1", gpu, data_bytes=15 * gib)
    with pytest.raises(SearchInputError, match=r"and the searched images 18.3 GB, more than the 17.2 GB of memory of "
                                               r"cuda:0; stream the images \(--data-path stream\)"):
        check_model_fits("wrn-10-1", gpu, data_bytes=17 * gib)


def _peak_rss_growth(run) -> int:
    """Bytes by which this process's peak resident memory rose while ``run()`` ran (Linux)."""
    def status(key: str) -> int:
        line = next(line for line in open("/proc/self/status") if line.startswith(key + ":"))
        return int(line.split()[1]) * 1024

    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # peak := current
    except OSError:
        pytest.skip("measuring the peak memory needs Linux's /proc/self/clear_refs")
    before = status("VmRSS")
    run()
    return status("VmHWM") - before


def test_streaming_holds_a_few_batches_not_the_dataset(tmp_path) -> None:
    """240 tiny files decoded to 256 px: 47 MB in memory, a few batches of 0.8 MB streamed."""
    for label in range(2):
        (tmp_path / f"class{label}").mkdir()
        for index in range(120):
            Image.new("RGB", (8, 8), (label * 100, index, 7)).save(tmp_path / f"class{label}" / f"{index}.png")
    size = 256
    decoded = 240 * 3 * size * size
    listed = list_search_images("imagefolder", tmp_path, image_size=size)
    train_indices, val_indices = split_halves(listed.labels)
    streamed = StreamedBatches(listed.subset(train_indices), listed.subset(val_indices), CPU, workers=0)
    train_batches, val_batches = _epoch(120, 120, 4, 0, fixed=False)

    def stream() -> None:
        for step in streamed.batches(train_batches, val_batches):
            del step

    assert _peak_rss_growth(stream) < decoded / 4
    assert _peak_rss_growth(lambda: load_search_images("imagefolder", tmp_path, image_size=size)) > decoded
