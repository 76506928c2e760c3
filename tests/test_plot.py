"""The per-epoch history of a search and ``dada-transforms plot``, on a real tiny search on the CPU."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
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
    assert all({"accuracy", "epoch", "loss"} <= set(entry) for entry in history) and len(history) == 3
    assert not any(set(entry) & {"sub_policy_weights", "probabilities", "magnitudes"} for entry in history)  # small JSON
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


def write_pair(searched, path, tensors) -> None:
    """``path`` (.json) a copy of the tiny result's JSON recording the SHA-256 of ``tensors``, saved beside it."""
    save_file(tensors, str(path.with_suffix(".safetensors")))
    record = json.loads(searched.paths.policy.read_text())
    if isinstance(record["metadata"].get("parameters"), dict):
        digest = hashlib.sha256(path.with_suffix(".safetensors").read_bytes()).hexdigest()
        record["metadata"]["parameters"]["sha256"] = digest
    path.write_text(json.dumps(record))


def test_plot_of_a_result_without_history_says_so(searched, tmp_path, capsys) -> None:
    tensors = {key: value for key, value in load_file(str(searched.paths.parameters)).items() if not key.startswith("history.")}
    write_pair(searched, tmp_path / "old.json", tensors)
    assert run_main("plot", str(tmp_path / "old.json"), "-o", str(tmp_path / "s.png")) == 2
    error = capsys.readouterr().err
    assert "has no history.sub_policy_weights tensor" in error and "search again" in error and error.count("\n") == 1
    assert not (tmp_path / "s.png").exists()


def test_plot_of_inconsistent_history_is_refused(searched, tmp_path, capsys) -> None:
    tensors = load_file(str(searched.paths.parameters))
    tensors["history.magnitudes"] = tensors["history.magnitudes"][:2].contiguous()
    write_pair(searched, tmp_path / "cut.json", tensors)
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


def copy_result(searched, folder, change) -> str:
    """The tiny search's result copied to ``folder/copy.json`` (with ``change`` applied to its JSON) and ``.safetensors``."""
    record = json.loads(searched.paths.policy.read_text())
    change(record)
    (folder / "copy.json").write_text(json.dumps(record))
    shutil.copy(searched.paths.parameters, folder / "copy.safetensors")
    return str(folder / "copy.json")


def test_plot_escapes_the_policy_name(searched, tmp_path, capsys) -> None:
    """A name with ESC ]0;...BEL retitled the terminal; ``show``'s escaping is used."""

    def rename(record):
        record["name"] = "tiny\x1b]0;owned\x07"

    result = copy_result(searched, tmp_path, rename)
    assert run_main("plot", result, "-o", str(tmp_path / "s.png")) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert out.strip().endswith("(3 epochs of tiny\\x1b]0;owned\\x07)")


@pytest.mark.parametrize("key, value", [("loss", "nan"), ("loss", "-inf"), ("loss", True), ("accuracy", "nan"), ("accuracy", None)])
def test_plot_refuses_a_history_value_that_is_not_a_finite_number(key, value, searched, tmp_path, capsys) -> None:
    def spoil(record):
        record["metadata"]["history"][1][key] = value

    result = copy_result(searched, tmp_path, spoil)
    assert run_main("plot", result, "-o", str(tmp_path / "s.png")) == 2
    error = capsys.readouterr().err
    assert f"history entry 2 has {key} {value!r}; every history entry's loss and accuracy must be a finite number" in error
    assert error.count("\n") == 1 and not (tmp_path / "s.png").exists()


def test_plot_of_a_built_in_preset_says_it_has_no_history(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_main("plot", "imagenet") == 2
    error = capsys.readouterr().err
    assert "'imagenet' is a built-in preset, which has no search history to plot" in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_plot_of_a_misspelt_preset_suggests_the_name(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_main("plot", "imagnet") == 2
    error = capsys.readouterr().err
    assert "no preset or file 'imagnet' (did you mean 'imagenet'?)" in error and error.count("\n") == 1


NOISE_FLOOR = {"weight": 0.0012, "probability": 0.09, "magnitude": 0.07, "steps": 9, "method": "permuted objective"}


def bands(figure) -> list:
    return [patch for axes in figure.axes for patch in axes.patches if patch.get_label().startswith("noise band")]


def test_plot_draws_the_noise_band_a_result_records(searched, tmp_path) -> None:
    from dada_transforms.plot import load_search_history, search_figure

    def add_band(record):
        record["metadata"]["noise_floor"] = NOISE_FLOOR

    history = load_search_history(copy_result(searched, tmp_path, add_band))
    assert history.noise_floor == NOISE_FLOOR
    figure = search_figure(history)
    drawn = sorted(value for band in bands(figure) for value in (band.get_y(), band.get_y() + band.get_height()))
    expected = [1 / 105 - 0.0012, 1 / 105 + 0.0012, 0.5 - 0.09, 0.5 + 0.09, 0.5 - 0.07, 0.5 + 0.07]
    assert drawn == pytest.approx(sorted(expected), abs=1e-6)
    weights_axes, _, p_axes, m_axes = figure.axes[:4]
    outside_p = int(((history.probabilities[-1] - 0.5).abs() > 0.09).sum())
    outside_w = int(((history.weights[-1] - 1 / 105).abs() > 0.0012).sum())
    assert f"{outside_p} of 210 outside the noise band" in p_axes.get_title()
    assert f"({outside_w} of 105 outside the noise band)" in weights_axes.get_title()
    assert run_main("plot", str(tmp_path / "copy.json"), "-o", str(tmp_path / "band.png")) == 0


def test_plot_of_a_result_without_a_noise_band_draws_none(searched, tmp_path) -> None:
    """A result written before searches recorded a noise floor is drawn as before."""
    from dada_transforms.plot import load_search_history, search_figure

    history = load_search_history(copy_result(searched, tmp_path, lambda record: record["metadata"].pop("noise_floor", None)))
    assert history.noise_floor is None
    figure = search_figure(history)
    assert bands(figure) == [] and not any("noise band" in axes.get_title() for axes in figure.axes)


@pytest.mark.parametrize(
    "record, message",
    [
        ([0.1], "metadata noise_floor must be an object with weight, probability, magnitude"),
        ({**NOISE_FLOOR, "probability": -0.1}, "noise_floor probability must be a finite number >= 0, got -0.1"),
        ({**NOISE_FLOOR, "magnitude": "nan"}, "noise_floor magnitude must be a finite number >= 0, got 'nan'"),
        ({"probability": 0.1, "magnitude": 0.1}, "noise_floor weight must be a finite number >= 0, got None"),
    ],
)
def test_plot_refuses_a_malformed_noise_band(record, message, searched, tmp_path, capsys) -> None:
    def add_band(result):
        result["metadata"]["noise_floor"] = record

    assert run_main("plot", copy_result(searched, tmp_path, add_band), "-o", str(tmp_path / "s.png")) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_the_evaluation_chart_draws_paired_differences_around_zero() -> None:
    """Not bars of absolute accuracy on a cut axis: each condition minus no-policy, its interval, the zero line."""
    from dada_transforms.plot import evaluation_figure
    from dada_transforms.search.evaluate import ConditionScores, Evaluation

    setup = {"model": "wrn-10-1", "dataset": "imagefolder", "epochs": 1, "train_images": 10, "test_images": 10}
    evaluation = Evaluation(
        (
            ConditionScores("searched", "", (0.91, 0.92, 0.93, 0.94, 0.95)),
            ConditionScores("no-policy", "", (0.90, 0.90, 0.90, 0.90, 0.90)),
            ConditionScores("random", "", (0.80, 0.95, 0.85, 0.97, 0.90)),
        ),
        (0, 1, 2, 3, 4),
        setup,
    )
    figure = evaluation_figure(evaluation)
    axes = figure.axes[0]
    assert len(axes.patches) == 0  # no bars
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in axes.lines)  # the zero line
    means = [line.get_ydata()[0] for line in axes.lines if line.get_marker() == "D"]
    assert means == pytest.approx([3.0, -0.6])  # searched and random minus no-policy, in points
    half = 2.776 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)
    [whiskers, _] = [collection.get_segments() for collection in axes.collections][:2]
    assert [whiskers[0][0][1], whiskers[0][1][1]] == pytest.approx([3.0 - half, 3.0 + half], abs=2e-3)
    assert [tick.get_text() for tick in axes.get_xticklabels()] == ["searched", "random"]
    assert "minus no-policy" in axes.get_ylabel()


def evaluation_record() -> dict:
    from dada_transforms.search.evaluate import ConditionScores, Evaluation

    setup = {"model": "wrn-10-1", "dataset": "imagefolder", "epochs": 1, "train_images": 10, "test_images": 10}
    scores = (ConditionScores("searched", "", (0.91, 0.93, 0.95)), ConditionScores("no-policy", "", (0.90, 0.90, 0.90)))
    return Evaluation(scores, (0, 1, 2), setup).to_dict()


def test_plot_draws_an_evaluation_json_as_paired_differences(tmp_path, capsys) -> None:
    (tmp_path / "scores.json").write_text(json.dumps(evaluation_record()))
    assert run_main("plot", str(tmp_path / "scores.json"), "-o", str(tmp_path / "e.png")) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'e.png'} (the differences to no-policy over 3 seeds)"
    with Image.open(tmp_path / "e.png") as picture:
        assert picture.format == "PNG"


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda r: r["conditions"][0].update(accuracies=[0.9, "nan", 0.9]), "condition 1 must have a name and one accuracy in [0, 1] per seed (3)"),
        (lambda r: r["conditions"][1].update(accuracies=[0.9]), "condition 2 must have a name and one accuracy in [0, 1] per seed (3)"),
        (lambda r: r.update(seeds=[0, True, 2]), "'seeds' must be a list of 1 to 100 integers"),
        (lambda r: r["conditions"][1].update(name="searched"), "conditions must have distinct names"),
    ],
)
def test_plot_refuses_an_invalid_evaluation_json(spoil, message, tmp_path, capsys) -> None:
    record = evaluation_record()
    spoil(record)
    (tmp_path / "scores.json").write_text(json.dumps(record))
    assert run_main("plot", str(tmp_path / "scores.json"), "-o", str(tmp_path / "e.png")) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and not (tmp_path / "e.png").exists()
