"""dada-search data-parallel under torchrun: two CPU processes, gloo, a tiny ImageFolder, seconds.

torchrun runs this file itself as the worker script (see ``__main__`` at the bottom): each
process runs the search and writes its own copy of the learned parameters, so the test can
compare the processes with each other and with a one-process search.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

TINY = {"model": "wrn-10-1", "image_size": 16, "cutout": 8, "batch_size": 4, "device": "cpu", "progress": False}
NO_BATCH_NORM = "test_efficientnet_gn"  # timm's 100k-parameter test network, GroupNorm instead of BatchNorm


def _torchrun(mode: str, out: Path, options: dict, *, processes: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
         __file__, mode, str(out), json.dumps(options)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_torchrun_environment_is_read_and_checked(monkeypatch) -> None:
    from dada_transforms.search.distributed import SINGLE, processes_from_environment
    from dada_transforms.search.settings import SearchInputError

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert processes_from_environment() is SINGLE
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    processes = processes_from_environment()
    assert (processes.rank, processes.world_size, processes.local_rank, processes.local_world_size) == (3, 4, 1, 2)
    assert processes.shard(torch.arange(8)).tolist() == [6, 7]
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(SearchInputError, match="inconsistent torchrun environment"):
        processes_from_environment()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(SearchInputError, match="RANK must be an integer"):
        processes_from_environment()


def _search_options(image_tree: Path, output: Path, **changes) -> dict:
    return {"dataset": "imagefolder", "name": "run", "output": str(output), "data_dir": str(image_tree),
            "epochs": 2, **TINY, **changes}


def _parameters(out: Path, rank: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / f"rank{rank}.safetensors"))


@pytest.mark.parametrize(
    "method, searched",
    [
        ({"sampling": "per-sample"}, ("alpha", "probabilities", "magnitudes")),
        ({"method": "compact", "draws": 2}, ("logits", "probability", "magnitudes")),
    ],
    ids=["published", "compact"],
)
def test_two_processes_equal_one_process_with_the_same_global_batch(image_tree, tmp_path, method, searched) -> None:
    """Two streamed processes against one in-memory process: sharding, averaging and streaming at once, per method."""
    from dada_transforms.search.loop import search

    options = _search_options(image_tree, tmp_path / "two", model=NO_BATCH_NORM, **method)
    result = _torchrun("search", tmp_path, {**options, "data_path": "stream", "workers": 1})
    assert result.returncode == 0, result.stderr
    single = search(**{**options, "output": tmp_path / "one", "data_path": "memory"}).parameters
    parallel = _parameters(tmp_path, 0)
    for key in searched:
        start = {"alpha": 1e-3, "logits": 0.0}.get(key, 0.5)  # every searched tensor starts at a constant
        assert (single[key] - start).abs().max() > 1e-4, key  # learned
        torch.testing.assert_close(parallel[key], single[key], rtol=0, atol=2e-5, msg=key)


def test_a_streamed_search_equals_the_in_memory_search(image_tree, tmp_path) -> None:
    from dada_transforms.search.loop import search

    options = _search_options(image_tree, tmp_path, epochs=1, val_batches="fixed")
    streamed = search(**{**options, "name": "streamed", "data_path": "stream", "workers": 0}).parameters
    in_memory = search(**{**options, "name": "in-memory", "data_path": "memory"}).parameters
    for key in in_memory:
        assert torch.equal(streamed[key], in_memory[key]), key


def test_parameters_are_identical_on_every_process_and_resume_reproduces_them(image_tree, tmp_path) -> None:
    straight = _torchrun("search", tmp_path / "straight", _search_options(image_tree, tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    first, second = _parameters(tmp_path / "straight", 0), _parameters(tmp_path / "straight", 1)
    assert set(first) == set(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert (first["probabilities"] - 0.5).abs().max() > 1e-3  # the search moved them
    written = sorted(path.name for path in (tmp_path / "straight").iterdir())
    assert written == ["rank0.safetensors", "rank1.safetensors", "run.json", "run.safetensors"]  # no checkpoint left

    interrupted = _torchrun("interrupt", tmp_path / "resumed", _search_options(image_tree, tmp_path / "resumed"))
    assert interrupted.returncode != 0
    assert json.loads((tmp_path / "resumed" / "run.checkpoint" / "checkpoint.json").read_text())["epoch"] == 1
    resumed = _torchrun("search", tmp_path / "resumed", _search_options(image_tree, tmp_path / "resumed", resume=True))
    assert resumed.returncode == 0, resumed.stderr
    for rank in (0, 1):
        expected, got = _parameters(tmp_path / "straight", rank), _parameters(tmp_path / "resumed", rank)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=f"rank {rank}: {key}")


def test_an_error_on_one_process_ends_the_job_with_one_clear_message(image_tree, tmp_path) -> None:
    options = _search_options(image_tree, tmp_path / "presets", epochs=50)
    started = time.monotonic()
    result = _torchrun("fail-on-rank-1", tmp_path, options, timeout=120)
    assert time.monotonic() - started < 60
    assert result.returncode != 0
    assert "dada-search: error (rank 1): simulated failure at step 3" in result.stderr
    assert "dada-search: stopped (rank 0): another process of this job failed" in result.stderr
    assert "[rank0]" not in result.stderr and "[rank1]" not in result.stderr  # no worker tracebacks


def test_a_global_batch_that_does_not_divide_is_one_clear_error(image_tree, tmp_path) -> None:
    result = _torchrun("cli", tmp_path, _search_options(image_tree, tmp_path / "presets", batch_size=5))
    assert result.returncode != 0
    message = "dada-search: error: batch size 5 (the global batch) must be a multiple of the 2 processes"
    assert result.stderr.count(message) == 1, result.stderr  # from rank 0 only
    assert "[rank" not in result.stderr
    assert not (tmp_path / "presets").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _one_process_checkpoint(image_tree: Path, output: Path, monkeypatch) -> Path:
    """The checkpoint folder of a one-process search interrupted after its first epoch."""
    import dada_transforms.search.checkpoint as checkpoint_module
    from dada_transforms.search.loop import search

    real_save = checkpoint_module.save_checkpoint

    def save_then_stop(directory, state):
        real_save(directory, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        search(**_search_options(image_tree, output))
    return output / "run.checkpoint"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs need POSIX")
def test_processes_that_differ_are_stopped_with_one_message_naming_what_and_which_ranks(
    image_tree, tmp_path, monkeypatch
) -> None:
    """One launch, several set-ups that must each stop both processes (then the CLI, whose exit ends the job)."""
    other_data = tmp_path / "other-images"
    shutil.copytree(image_tree, other_data)
    (other_data / "class2" / "7.png").write_bytes((image_tree / "class2" / "6.png").read_bytes())
    one_process = _one_process_checkpoint(image_tree, tmp_path / "one", monkeypatch)
    assert json.loads((one_process / "checkpoint.json").read_text())["processes"] == 1
    fifo = tmp_path / "fifo"
    shutil.copytree(one_process, fifo / "run.checkpoint")
    index = json.loads((fifo / "run.checkpoint" / "checkpoint.json").read_text())
    (fifo / "run.checkpoint" / "checkpoint.json").write_text(json.dumps({**index, "processes": 2}))
    tensors = fifo / "run.checkpoint" / index["tensors"]
    tensors.unlink()
    os.mkfifo(tensors)
    base = _search_options(image_tree, tmp_path / "unused")
    cases = [
        ({}, {"lr": 0.05}),
        ({}, {"epochs": 3, "batch_size": 6}),
        ({}, {"data_dir": str(other_data)}),
        ({"output": str(tmp_path / "one"), "resume": True},) * 2,
        ({"output": str(fifo), "resume": True},) * 2,
    ]
    ports = [_free_port() for _ in range(len(cases) + 1)]
    options = {"base": base, "cases": cases, "cli_rank1": ["--lr", "0.05"], "ports": ports}
    result = _torchrun("cases", tmp_path, options, timeout=180)
    messages = {}
    for line in result.stdout.splitlines():
        rank, case, message = line.split(" ", 2)
        messages.setdefault(int(case), {})[int(rank)] = message
    assert sorted(messages) == list(range(len(cases))), result.stdout + result.stderr
    for case, by_rank in messages.items():
        assert by_rank[0] == by_rank[1], case  # the same message on both processes
    assert messages[0][0] == ("the 2 processes of this job differ in settings: 'lr' (0.1 on rank 0; 0.05 on rank 1); "
                              "start every process with the same arguments and data")
    assert "'batch_size' (4 on rank 0; 6 on rank 1); 'epochs' (2 on rank 0; 3 on rank 1)" in messages[1][0]
    assert messages[2][0].startswith("the 2 processes of this job differ in the searched data: 'content_sha256' (")
    assert "was made by 1 process sharing each batch, this search has 2: resume it with 1" in messages[3][0]
    assert messages[4][0] == (f"cannot read checkpoint file '{tensors}': not a regular file; cannot share the "
                              f"checkpoint with the other processes")
    assert result.returncode != 0  # the CLI: rank 1's --lr differs
    lines = [line for line in result.stderr.splitlines() if line.startswith("dada-search: error")]
    assert lines == ["dada-search: error: the 2 processes of this job differ in settings: 'lr' (0.1 on rank 0; 0.05 on "
                     "rank 1); start every process with the same arguments and data"], result.stderr
    assert "[rank" not in result.stderr  # no worker tracebacks


def test_a_stalled_process_ends_the_job_after_the_timeout(image_tree, tmp_path) -> None:
    options = _search_options(image_tree, tmp_path / "presets", epochs=50)
    started = time.monotonic()
    result = _torchrun("stall-on-rank-1", tmp_path, options, timeout=120)
    assert time.monotonic() - started < 60  # rank 1 sleeps for 300 s
    assert result.returncode != 0
    assert "dada-search: stopped (rank 0): another process of this job failed or stalled" in result.stderr


def test_a_killed_process_ends_the_job_instead_of_hanging_it(image_tree, tmp_path) -> None:
    options = _search_options(image_tree, tmp_path / "presets", epochs=500)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         __file__, "search", str(tmp_path), json.dumps(options)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "presets" / "run.checkpoint").exists():  # training has started
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1]
            time.sleep(0.2)
        os.kill(_worker_pid(job.pid, rank=1), signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = job.communicate(timeout=60)
        assert time.monotonic() - killed < 30
        assert job.returncode != 0
    finally:
        if job.poll() is None:
            job.kill()


def _worker_pid(parent: int, rank: int) -> int:
    """The pid of the torchrun worker of ``rank`` started by process ``parent``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and f"RANK={rank}".encode() in environment:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under process {parent}")


# -- the worker: one process ----------------------------------------------------------


def _flags(options: dict) -> list[str]:
    return ["--dataset", options["dataset"], "--data-dir", options["data_dir"], "--name", options["name"],
            "--output", options["output"], "--epochs", str(options["epochs"]), "--model", options["model"],
            "--image-size", "16", "--cutout", "8", "--batch-size", str(options["batch_size"]), "--device", "cpu",
            "--no-progress", "--timeout", "5"]


def _say_line(text: str) -> None:
    """One line to stdout in one write: both ranks share the pipe, and print's separate write of the
    newline let the other rank's line land between a message and its newline."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _worker(mode: str, out: Path, options: dict) -> int:
    import dada_transforms.search.checkpoint as checkpoint_module
    from dada_transforms.search.bilevel import BilevelSearchStep
    from dada_transforms.search.cli import main
    from dada_transforms.search.loop import search
    from dada_transforms.search.settings import SearchInputError

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    if mode == "cases":  # each case: the options of rank 0 and rank 1 over options["base"]; then the CLI
        for number, changes in enumerate(options["cases"]):
            # a fresh rendezvous store per process group (a reused one holds the last group's addresses)
            os.environ.update(MASTER_PORT=str(options["ports"][number]), TORCHELASTIC_USE_AGENT_STORE="False")
            case = {**options["base"], **changes[rank]}
            try:
                search(case.pop("dataset"), **case)
                _say_line(f"{rank} {number} finished")
            except SearchInputError as error:
                _say_line(f"{rank} {number} {error}")
        os.environ["MASTER_PORT"] = str(options["ports"][-1])
        return main(_flags(options["base"]) + (options["cli_rank1"] if rank == 1 else []))
    flags = _flags(options)
    if mode == "cli":
        return main(flags)
    if mode in ("fail-on-rank-1", "stall-on-rank-1"):
        real_step = BilevelSearchStep.step
        calls = []

        def failing_step(self, *arguments):
            calls.append(1)
            if rank == 1 and len(calls) == 3:
                if mode == "stall-on-rank-1":
                    time.sleep(300)
                raise SearchInputError("simulated failure at step 3")
            return real_step(self, *arguments)

        BilevelSearchStep.step = failing_step
        return main(flags)
    if mode == "interrupt":
        real_save = checkpoint_module.save_checkpoint

        def save_then_stop(directory, state):
            real_save(directory, state)
            raise KeyboardInterrupt

        checkpoint_module.save_checkpoint = save_then_stop
    dataset = options.pop("dataset")
    result = search(dataset, **options)
    out.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in result.parameters.items()}, str(out / f"rank{rank}.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])))
