"""dada-search end to end on tiny data, on the CPU: the console script and the Python API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

import dada_transforms.hub as hub
from dada_transforms import DADA, Policy
from dada_transforms.search.cli import main
from dada_transforms.search.loop import search
from dada_transforms.search.settings import SearchInputError

TINY = ["--model", "wrn-10-1", "--image-size", "16", "--cutout", "8", "--batch-size", "4", "--device", "cpu"]
TINY_API = {"model": "wrn-10-1", "image_size": 16, "cutout": 8, "batch_size": 4, "device": "cpu", "progress": False}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    executable = shutil.which("dada-search")
    command = [executable] if executable else [sys.executable, "-m", "dada_transforms.search.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def run_main(*args: str) -> int:
    """``dada-search ARGS`` in this process: the exit status (argparse's own errors exit)."""
    try:
        return main(list(args))
    except SystemExit as exit:
        return exit.code


def test_cli_search_writes_a_loadable_preset(image_tree, tmp_path) -> None:
    presets = tmp_path / "presets"
    result = run_cli(
        "--dataset", "imagefolder", "--data-dir", str(image_tree), "--epochs", "2", "--top-k", "10",
        "--name", "tiny-search", *TINY, env={"DADA_PRESET_DIR": str(presets)},
    )
    assert result.returncode == 0, result.stderr
    policy_path, parameters_path = presets / "tiny-search.json", presets / "tiny-search.safetensors"
    assert result.stdout.strip() == str(policy_path)
    assert "epoch 2/2: loss" in result.stderr and "top: " in result.stderr
    assert f"wrote {policy_path} and {parameters_path}" in result.stderr
    assert sorted(path.name for path in presets.iterdir()) == ["tiny-search.json", "tiny-search.safetensors"]

    policy = Policy.from_json(policy_path)
    assert len(policy) == 10 and policy.name == "tiny-search"
    weights = policy.metadata["sub_policy_weights"]
    assert len(weights) == 10 and weights == sorted(weights, reverse=True)
    assert policy.metadata["search"]["model"] == "wrn-10-1" and policy.metadata["search"]["epochs"] == 2
    assert [entry["epoch"] for entry in policy.metadata["history"]] == [1, 2]

    with safe_open(str(parameters_path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        assert handle.metadata()["format"] == "dada-search-parameters"
    assert tensors["alpha"].shape == (105,)
    assert tensors["probabilities"].shape == tensors["magnitudes"].shape == (105, 2)
    assert any(key.startswith("control_variate.") for key in tensors)
    assert (tensors["probabilities"] - 0.5).abs().max() > 1e-3
    assert (tensors["magnitudes"] - 0.5).abs().max() > 1e-3
    assert 0 <= tensors["probabilities"].min() and tensors["magnitudes"].max() <= 1

    by_path = DADA(str(policy_path))
    assert by_path.policy == policy
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    assert by_path(images).shape == images.shape
    # By name (the user preset directory), and in timm by name and by path (--aa dada-...).
    script = (
        "import dada_transforms_timm_hook as hook; hook.install()\n"
        "import sys, timm.data\n"
        "from dada_transforms import DADA\n"
        "print(len(DADA('tiny-search').policy))\n"
        "for spec in ('dada-tiny-search', 'dada-' + sys.argv[1]):\n"
        "    transform = timm.data.create_transform(32, is_training=True, auto_augment=spec)\n"
        "    print(next(len(t.policy) for t in transform.transforms if type(t).__name__ == 'DADA'))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script, str(policy_path)],
        capture_output=True, text=True, env={**os.environ, "DADA_PRESET_DIR": str(presets)},
    )
    assert loaded.stdout.split() == ["10", "10", "10"], loaded.stderr


def test_resume_reproduces_an_uninterrupted_search(image_tree, tmp_path, monkeypatch, stopping_after_a_checkpoint) -> None:
    pushed = []
    monkeypatch.setattr(
        hub, "push_preset", lambda path, repo_id, safetensors_path: pushed.append((path, repo_id, safetensors_path))
    )
    straight = search(
        "imagefolder", name="run", output=tmp_path / "straight", data_dir=image_tree, epochs=2,
        push_to_hub="org/run", **TINY_API,
    )
    assert pushed == [(straight.paths.policy, "org/run", straight.paths.parameters)]

    with stopping_after_a_checkpoint(), pytest.raises(KeyboardInterrupt):
        search("imagefolder", name="run", output=tmp_path / "resumed", data_dir=image_tree, epochs=2, **TINY_API)
    assert json.loads((tmp_path / "resumed" / "run.checkpoint" / "checkpoint.json").read_text())["epoch"] == 1
    assert not (tmp_path / "resumed" / "run.json").exists()

    with pytest.raises(SearchInputError, match="other settings .*seed: 0 there, 1 now"):
        search("imagefolder", name="run", output=tmp_path / "resumed", data_dir=image_tree, epochs=2, seed=1, resume=True, **TINY_API)
    resumed = search(
        "imagefolder", name="run", output=tmp_path / "resumed", data_dir=image_tree, epochs=2, resume=True, **TINY_API
    )
    assert set(resumed.parameters) == set(straight.parameters)
    for key, value in straight.parameters.items():
        torch.testing.assert_close(resumed.parameters[key], value, rtol=0, atol=1e-6, msg=key)
    assert (straight.parameters["magnitudes"] - 0.5).abs().max() > 1e-3
    assert resumed.policy.metadata["history"] == straight.policy.metadata["history"]
    assert not (tmp_path / "resumed" / "run.checkpoint").exists()


def test_missing_dataset_says_which_folder_to_fill(tmp_path) -> None:
    result = run_cli("--dataset", "reduced-cifar10", "--data-dir", str(tmp_path / "data"), "--name", "x", "--output", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("dada-search: error: cifar10 not found in ")
    assert str(tmp_path / "data") in result.stderr and "--download" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "mnist"], "argument --dataset: invalid choice: 'mnist'"),
        (["--dataset", "imagefolder"], "error: --dataset imagefolder needs --data-dir DIR"),
        (["--dataset", "cifar10", "--epochs", "0"], "error: epochs must be an integer >= 1, got 0"),
        (["--dataset", "cifar10", "--top-k", "200"], "error: top-k must be an integer in [1, 105], got 200"),
        (["--dataset", "cifar10", "--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
        (["--dataset", "cifar10", "--model", "resnet5O"], "error: unknown model 'resnet5O' (did you mean 'resnet50'"),
        (["--dataset", "cifar10", "--name", "a/b"], "error: preset name must be letters"),
        (["--dataset", "cifar10", "--push-to-hub", "nope"], "error: --push-to-hub: a Hub repository id must look like 'org/name'"),
        (["--dataset", "cifar10", "--push-to-hub", "a--b/c"], "got 'a--b/c'"),
        (["--dataset", "reduced-cifar10", "--data-path", "stream"], "error: streaming applies to imagenet, reduced-imagenet and imagefolder; torchvision reads reduced-cifar10 into memory"),
        (["--dataset", "imagefolder", "--data-dir", ".", "--workers", "-1"], "error: workers must be an integer >= 0, got -1"),
        (["--dataset", "cifar10", "--timeout", "0"], "error: timeout must be a positive number of seconds, got 0.0"),
    ],
)
def test_bad_arguments_give_clear_errors(args, message, tmp_path, capsys) -> None:
    output = tmp_path / "out"
    assert run_main("--name", "x", "--output", str(output), *args) == 2
    stderr = capsys.readouterr().err
    assert message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 or "usage:" in stderr  # one line (argparse adds its usage)


def test_builtin_preset_names_are_refused_in_the_preset_directory(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DADA_PRESET_DIR", str(tmp_path))
    assert run_main("--dataset", "cifar10", "--name", "cifar10") == 2
    assert "dada-search: error: preset name 'cifar10' is a built-in preset" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys) -> None:
    assert run_main("--dataset", "cifar10", "--device", "cuda", "--name", "x", "--output", str(tmp_path)) == 2
    assert "CUDA is not available here; use --device cpu" in capsys.readouterr().err
