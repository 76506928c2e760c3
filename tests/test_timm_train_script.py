"""The .pth hook in fresh interpreters, and timm's own, unmodified train.py with ``--aa dada-...``.

A regular install (``pip install .``) puts ``dada_transforms_timm.pth`` in site-packages;
the subprocesses then run plain ``python``. Where it is missing (an editable install made
before the .pth was shipped there), they load the repository's copy of the .pth through
``site.addsitedir``, exactly as Python's start-up would.

timm's train.py is not in timm's wheel: set ``DADA_TIMM_TRAIN_PY`` to a local copy
(e.g. from a clone of pytorch-image-models) to run those tests.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

PTH_NAME = "dada_transforms_timm.pth"
REPO_PTH = Path(__file__).resolve().parents[1] / PTH_NAME
TRAIN_PY = os.environ.get("DADA_TIMM_TRAIN_PY")


def _installed_pth() -> bool:
    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return any((Path(folder) / PTH_NAME).is_file() for folder in folders)


def _with_hook(code: str, tmp_path: Path) -> str:
    """``code`` prefixed, where the .pth is not installed, by what site does with it at start-up."""
    if _installed_pth():
        return code
    site_dir = tmp_path / "site"
    site_dir.mkdir(exist_ok=True)
    (site_dir / PTH_NAME).write_text(REPO_PTH.read_text())
    return f"import site; site.addsitedir({str(site_dir)!r})\n{code}"


def _run(code: str, tmp_path: Path, switch: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.pop("DADA_TRANSFORMS_TIMM", None)
    if switch is not None:
        env["DADA_TRANSFORMS_TIMM"] = switch
    return subprocess.run(
        [sys.executable, "-c", _with_hook(code, tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_hook_module_imports_nothing_heavy(tmp_path):
    code = (
        "import sys, dada_transforms_timm_hook as hook\n"
        "hook.install()\n"
        "print(sorted(m for m in ('torch', 'timm', 'dada_transforms', 'PIL', 'numpy') if m in sys.modules))"
    )
    assert _last_line(_run(code, tmp_path)) == "[]"


def test_pth_is_active_and_lazy_at_start_up(tmp_path):
    code = (
        "import sys\n"
        "print('torch' in sys.modules, 'timm' in sys.modules,"
        " any(getattr(finder, 'is_dada_timm_finder', False) for finder in sys.meta_path))"
    )
    assert _last_line(_run(code, tmp_path)) == "False False True"


def test_pth_makes_plain_timm_accept_dada(tmp_path):
    code = (
        "import timm.data\n"
        "step = lambda aa: type(timm.data.create_transform(32, is_training=True, auto_augment=aa).transforms[2]).__name__\n"
        "print(step('dada-imagenet'), step('rand-m9-mstd0.5'), step('original'))"
    )
    assert _last_line(_run(code, tmp_path)) == "DADA RandAugment AutoAugment"


def test_environment_variable_switches_the_hook_off(tmp_path):
    code = (
        "import sys, timm.data, dada_transforms_timm_hook as hook\n"
        "print(hook.install(), any(getattr(f, 'is_dada_timm_finder', False) for f in sys.meta_path), end=' ')\n"
        "try:\n"
        "    timm.data.create_transform(32, is_training=True, auto_augment='dada-imagenet')\n"
        "    print('dada accepted')\n"
        "except AssertionError:\n"
        "    print('rejected by timm')"
    )
    assert _last_line(_run(code, tmp_path, switch="0")) == "False False rejected by timm"


# -- timm's own train.py -----------------------------------------------------------

needs_train_py = pytest.mark.skipif(
    not TRAIN_PY or not Path(TRAIN_PY).is_file(),
    reason="timm's train.py is not in timm's wheel; set DADA_TIMM_TRAIN_PY to a local copy to run this",
)


def _train(tmp_path: Path, data: Path, *extra: str, switch: str | None = None) -> subprocess.CompletedProcess:
    arguments = [
        "--data-dir", str(data), "--model", "test_resnet", "--num-classes", "2", "--img-size", "32",
        "--epochs", "1", "--warmup-epochs", "0", "-b", "4", "--workers", "2", "--device", "cpu",
        "--log-interval", "1", "--output", str(tmp_path / "out"), "--experiment", "run", *extra,
    ]
    code = f"import runpy, sys\nsys.argv = {[TRAIN_PY, *arguments]!r}\nrunpy.run_path({TRAIN_PY!r}, run_name='__main__')"
    if _installed_pth() and switch is None:  # exactly what a user types
        env = {key: value for key, value in os.environ.items() if key != "DADA_TRANSFORMS_TIMM"}
        return subprocess.run(
            [sys.executable, TRAIN_PY, *arguments], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    return _run(code, tmp_path, switch=switch)


@needs_train_py
def test_train_py_one_cpu_epoch_with_dada(tmp_path, tiny_image_folder):
    result = _train(tmp_path, tiny_image_folder, "--aa", "dada-imagenet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Train: 0 [   3/4 (100%)]" in result.stdout + result.stderr
    log = (result.stdout + result.stderr).splitlines()
    applying = [line for line in log if "DADA: applying policy 'imagenet' (25 sub-policies)" in line]
    assert len(applying) == 1, log  # one line, through train.py's logging
    assert (tmp_path / "out" / "run" / "summary.csv").is_file()


@needs_train_py
def test_train_py_aug_splits_noise_and_interpolation(tmp_path, tiny_image_folder):
    result = _train(
        tmp_path, tiny_image_folder, "--aa", "dada-imagenet-mstd0.5", "--aug-splits", "2", "--jsd-loss",
        "--train-interpolation", "bicubic",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "run" / "summary.csv").is_file()


@needs_train_py
def test_train_py_rejects_dada_with_the_hook_switched_off(tmp_path, tiny_image_folder):
    """The control: without the hook, timm itself refuses ``--aa dada-imagenet``."""
    result = _train(tmp_path, tiny_image_folder, "--aa", "dada-imagenet", switch="0")
    assert result.returncode != 0
    assert "dada" in result.stderr
    assert not (tmp_path / "out" / "run" / "summary.csv").exists()
