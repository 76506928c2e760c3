"""bench/gpu_check.py, the prepared GPU check: what of it can run without a GPU does run here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_without_cuda_it_says_so_in_one_line_and_exits_2() -> None:
    result = _run(str(BENCH / "gpu_check.py"))
    assert result.returncode == 2, result.stderr
    assert result.stdout == "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing checked\n"


def test_its_python_parts_run_on_the_cpu(tmp_path) -> None:
    result = _run(str(BENCH / "gpu_check.py"), "--only", "sync-free", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("gpu_check: sync-free: ran on cpu")
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    gpu_check.write_image_folder(tmp_path / "images", classes=2, per_class=2, size=8)
    assert len(list((tmp_path / "images").glob("*/*.png"))) == 4
    commands = gpu_check._commands(tmp_path, gpus=2)
    assert set(commands) == set(gpu_check.CHECKS) == set(gpu_check.LIMITS_S)
    for name in ("transform-bench", "search-bench", "search-cli"):  # each program it calls parses its arguments
        command = commands[name]
        arguments = command[1:] if command[1] != "-m" else command[1:3]
        result = _run(*arguments, "--help")
        assert result.returncode == 0, (name, result.stderr)
