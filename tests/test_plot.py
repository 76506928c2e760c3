"""The per-epoch history of a search and ``dada-transforms plot``, on a real tiny search on the CPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dada_transforms.cli import main
from dada_transforms.search.loop import search

TINY_API = {"model": "wrn-10-1", "image_size": 16, "cutout": 8, "batch_size": 4, "device": "cpu", "progress": False}
HISTORY_KEYS = ("history.sub_policy_weights", "history.probabilities", "history.magnitudes")


@pytest.fixture(scope="module")
def searched(image_tree, tmp_path_factory):
    return search("imagefolder", name="tiny", output=tmp_path_factory.mktemp("out"), data_dir=image_tree, epochs=3, **TINY_API)


def run_main(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exit:
        return exit.code


def test_a_search_records_its_parameters_after_every_epoch(searched) -> None:
    history = json.loads(searched.paths.policy.read_text())["metadata"]["history"]
    assert [sorted(entry) for entry in history] == [["accuracy", "epoch", "loss"]] * 3  # the JSON stays small
    with safe_open(str(searched.paths.parameters), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    weights, probabilities, magnitudes = (tensors[key] for key in HISTORY_KEYS)
    assert weights.shape == (3, 105) and probabilities.shape == magnitudes.shape == (3, 105, 2)
    assert all(tensors[key].dtype == torch.float32 for key in HISTORY_KEYS)
    # the last epoch's snapshot is the result (to the 6 significant digits kept)
    torch.testing.assert_close(weights[-1], torch.softmax(tensors["alpha"].double(), 0).float(), rtol=1e-5, atol=0)
    torch.testing.assert_close(probabilities[-1], tensors["probabilities"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(magnitudes[-1], tensors["magnitudes"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(weights.sum(1), torch.ones(3), rtol=0, atol=1e-5)
    assert (magnitudes[0] != magnitudes[-1]).any()  # one snapshot per epoch, not three copies of the end


def test_the_history_survives_an_interrupted_and_resumed_search(image_tree, tmp_path, stopping_after_a_checkpoint) -> None:
    straight = search("imagefolder", name="run", output=tmp_path / "straight", data_dir=image_tree, epochs=2, **TINY_API)
    with stopping_after_a_checkpoint(), pytest.raises(KeyboardInterrupt):
        search("imagefolder", name="run", output=tmp_path / "resumed", data_dir=image_tree, epochs=2, **TINY_API)
    resumed = search("imagefolder", name="run", output=tmp_path / "resumed", data_dir=image_tree, epochs=2, resume=True, **TINY_API)
    for key in HISTORY_KEYS:
        assert resumed.parameters[key].shape[0] == 2
        torch.testing.assert_close(resumed.parameters[key], straight.parameters[key], rtol=0, atol=0, msg=key)


def test_plot_draws_a_search_result(searched, tmp_path) -> None:
    executable = shutil.which("dada-transforms")
    command = [executable] if executable else [sys.executable, "-m", "dada_transforms"]
    output = tmp_path / "charts" / "search.png"
    result = subprocess.run(
        [*command, "plot", str(searched.paths.policy), "-o", str(output)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {output} (3 epochs of tiny)"
    with Image.open(output) as picture:
        assert picture.format == "PNG" and picture.size == (1210, 880)
    assert [path.name for path in output.parent.iterdir()] == ["search.png"]


def test_plot_takes_the_safetensors_too(searched, tmp_path, capsys) -> None:
    assert run_main("plot", str(searched.paths.parameters), "-o", str(tmp_path / "s.png"), "--top", "3") == 0
    assert (tmp_path / "s.png").is_file()


def test_plot_of_a_result_without_history_says_so(searched, tmp_path, capsys) -> None:
    shutil.copy(searched.paths.policy, tmp_path / "old.json")
    tensors = {key: value for key, value in load_file(str(searched.paths.parameters)).items() if not key.startswith("history.")}
    save_file(tensors, str(tmp_path / "old.safetensors"))
    assert run_main("plot", str(tmp_path / "old.json"), "-o", str(tmp_path / "s.png")) == 2
    error = capsys.readouterr().err
    assert "has no history.sub_policy_weights tensor" in error and "search again" in error and error.count("\n") == 1
    assert not (tmp_path / "s.png").exists()


def test_plot_of_inconsistent_history_is_refused(searched, tmp_path, capsys) -> None:
    shutil.copy(searched.paths.policy, tmp_path / "cut.json")
    tensors = load_file(str(searched.paths.parameters))
    tensors["history.magnitudes"] = tensors["history.magnitudes"][:2].contiguous()
    save_file(tensors, str(tmp_path / "cut.safetensors"))
    assert run_main("plot", str(tmp_path / "cut.json"), "-o", str(tmp_path / "s.png")) == 2
    assert "history.magnitudes must be finite floats of shape (3, 105, 2) (3 epochs in the JSON)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.json"], "'missing.json' does not exist: RESULT must be a search result"),
        (["RESULT", "-o", "search.jpg"], "the chart must be a .png file, got 'search.jpg'"),
        (["RESULT", "--top", "0"], "--top must be in [1, 105], got 0"),
    ],
)
def test_plot_errors_are_one_line(args, message, searched, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [str(searched.paths.policy) if arg == "RESULT" else arg for arg in args]
    assert run_main("plot", *args) == 2
    error = capsys.readouterr().err
    assert error.startswith("dada-transforms: error: ") and message in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_plot_without_matplotlib_names_the_extra(searched, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert run_main("plot", str(searched.paths.policy), "-o", str(tmp_path / "s.png")) == 2
    assert "pip install 'dada-transforms[plot]'" in capsys.readouterr().err
