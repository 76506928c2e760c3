"""The compact step data-parallel: two CPU processes under torchrun (gloo) against one process, same global batch.

torchrun runs this file itself as the worker script (see ``__main__`` at the bottom):
each process runs a few compact steps on its share of every global batch and writes
its parameters, so the test can compare the processes with each other and with one
process that runs the whole global batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

GLOBAL_BATCH = 8
ROOT = Path(__file__).resolve().parents[1]  # the workers import this working tree's package
STEPS = 3


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GroupNorm(2, 4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3),
    )


def _batches() -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(5)
    return [
        (
            torch.randint(0, 256, (GLOBAL_BATCH, 3, 8, 8), generator=generator, dtype=torch.uint8),
            torch.randint(0, 3, (GLOBAL_BATCH,), generator=generator),
            torch.randint(0, 256, (GLOBAL_BATCH, 3, 8, 8), generator=generator, dtype=torch.uint8),
            torch.randint(0, 3, (GLOBAL_BATCH,), generator=generator),
        )
        for _ in range(STEPS)
    ]


def _run(objective: str, processes) -> dict[str, torch.Tensor]:
    """The compact parameters and the network after STEPS steps, each process on its share of each batch."""
    from dada_transforms.search.compact import CompactAugmentation
    from dada_transforms.search.compact_step import CompactSearchStep

    model, parameters = _model(), CompactAugmentation()
    step = CompactSearchStep(
        model, parameters, draws=3, objective=objective, lr=0.1, weight_decay=1e-3, mean=(0.5,) * 3, std=(0.25,) * 3,
        cutout=4, arch_lr=0.05, generator=torch.Generator().manual_seed(1), processes=processes,
    )
    for batch in _batches():
        step.step(*(processes.shard(tensor) for tensor in batch))
    teacher = {} if step.teacher is None else {f"teacher.{k}": v for k, v in step.teacher.state_dict().items()}
    return {**parameters.tensors(), **{f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}, **teacher}


@pytest.mark.parametrize("objective", ["unrolled", "adversarial"])
def test_two_processes_stay_identical_and_equal_one_process(tmp_path, objective) -> None:
    from dada_transforms.search.distributed import SINGLE

    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__, objective,
         str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    first, second = (load_file(str(tmp_path / f"rank{rank}.safetensors")) for rank in (0, 1))
    single = _run(objective, SINGLE)
    assert set(first) == set(second) == set(single)
    for key in first:
        assert torch.equal(first[key], second[key]), key  # bit-identical on every process
        torch.testing.assert_close(first[key], single[key], rtol=0, atol=2e-5, msg=key)
    assert (single["logits"] - single["logits"].mean()).abs().max() > 1e-3  # the search moved them


if __name__ == "__main__":
    from dada_transforms.search.distributed import process_group, processes_from_environment

    processes = processes_from_environment()
    with process_group(processes, torch.device("cpu")):
        tensors = _run(sys.argv[1], processes)
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(Path(sys.argv[2]) / f"rank{processes.rank}.safetensors"))
