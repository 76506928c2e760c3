"""The search loop and its methods: the method setting, the registry, any method through the loop, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

import dada_transforms.search.methods as methods_module
from dada_transforms.search.cli import main
from dada_transforms.search.loop import search
from dada_transforms.search.methods import PublishedMethod, method_for
from dada_transforms.search.settings import METHODS, SearchInputError, SearchSettings, resolve_settings

TINY_API = {
    "data_dir": None, "model": "wrn-10-1", "image_size": 16, "cutout": 8, "batch_size": 4, "device": "cpu", "progress": False,
}
NEW_SETTINGS = ("method", "draws", "operations", "objective")


def _search(image_tree, output, **options):
    return search("imagefolder", name="run", output=output, **{**TINY_API, "data_dir": image_tree, **options})


def test_the_method_settings_default_to_the_published_search() -> None:
    settings = resolve_settings("cifar10")
    assert (settings.method, settings.draws, settings.operations, settings.objective) == ("published", 4, 2, "unrolled")
    assert isinstance(method_for(settings), PublishedMethod) and method_for(settings).name == "published"
    chosen = resolve_settings("cifar10", method="compact", draws=2, operations=1, objective="adversarial", top_k=15)
    assert (chosen.method, chosen.draws, chosen.operations, chosen.objective, chosen.top_k) == ("compact", 2, 1, "adversarial", 15)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"method": "dada"}, "method must be one of published, compact, got 'dada'"),
        ({"method": "compact", "draws": 1}, "draws of the compact method (its leave-one-out baseline needs two) must be an integer >= 2, got 1"),
        ({"draws": 0}, "draws must be an integer >= 1, got 0"),
        ({"draws": 2.5}, "draws must be an integer >= 1, got 2.5"),
        ({"operations": 0}, "operations (15^N ordered tuples must fit a policy file's 1024 sub-policies) must be an integer in [1, 2], got 0"),
        ({"method": "compact", "operations": 3}, "operations (15^N ordered tuples must fit a policy file's 1024 sub-policies) must be an integer in [1, 2], got 3"),  # 15 ** 3 tuples
        ({"objective": "greedy"}, "objective must be one of unrolled, adversarial, got 'greedy'"),
        ({"top_k": 106}, "top-k must be an integer in [1, 105], got 106"),
        ({"method": "compact", "top_k": 226}, "top-k must be an integer in [1, 225], got 226"),  # 15 x 15 ordered pairs
    ],
)
def test_bad_method_settings_are_clear_errors(options, message) -> None:
    with pytest.raises(SearchInputError) as error:
        resolve_settings("cifar10", **options)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "dada"], "argument --method: invalid choice: 'dada'"),
        (["--method", "compact", "--draws", "1"], "error: draws of the compact method (its leave-one-out baseline needs two)"),
        (["--operations", "0"], "error: operations (15^N ordered tuples must fit a policy file's 1024 sub-policies) must be an integer in [1, 2], got 0"),
        (["--method", "compact", "--operations", "3"], "error: operations (15^N ordered tuples must fit a policy file's 1024 sub-policies) must be an integer in [1, 2], got 3"),
        (["--objective", "greedy"], "argument --objective: invalid choice: 'greedy'"),
    ],
)
def test_bad_method_flags_are_one_line_errors(args, message, tmp_path, capsys) -> None:
    try:
        status = main(["--dataset", "cifar10", "--name", "x", "--output", str(tmp_path), *args])
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    stderr = capsys.readouterr().err
    assert status == 2 and message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 or "usage:" in stderr


def test_settings_written_before_the_method_settings_read_as_the_published_search() -> None:
    settings = resolve_settings("cifar10")
    old = {key: value for key, value in settings.to_dict().items() if key not in NEW_SETTINGS}
    assert SearchSettings.from_dict(old) == settings
    with pytest.raises(SearchInputError, match="must have exactly the keys"):
        SearchSettings.from_dict({**old, "extra": 1})


def test_every_method_is_registered() -> None:
    for name in METHODS:
        settings = resolve_settings("cifar10", method=name)
        assert method_for(settings).name == name


def test_a_checkpoint_written_before_the_method_settings_resumes(image_tree, tmp_path, stopping_after_a_checkpoint) -> None:
    straight = _search(image_tree, tmp_path / "straight", epochs=2)
    with stopping_after_a_checkpoint(), pytest.raises(KeyboardInterrupt):
        _search(image_tree, tmp_path / "resumed", epochs=2)
    index_path = tmp_path / "resumed" / "run.checkpoint" / "checkpoint.json"
    index = json.loads(index_path.read_text())
    index["settings"] = {key: value for key, value in index["settings"].items() if key not in NEW_SETTINGS}
    index_path.write_text(json.dumps(index))  # as the search wrote it before it had these settings

    resumed = _search(image_tree, tmp_path / "resumed", epochs=2, resume=True)
    assert set(resumed.parameters) == set(straight.parameters)
    for key, value in straight.parameters.items():
        torch.testing.assert_close(resumed.parameters[key], value, rtol=0, atol=0, msg=key)
    assert resumed.policy.metadata["search"]["method"] == "published"


def test_a_published_checkpoint_does_not_resume_under_another_method(image_tree, tmp_path, capsys, stopping_after_a_checkpoint) -> None:
    with stopping_after_a_checkpoint(), pytest.raises(KeyboardInterrupt):
        _search(image_tree, tmp_path, epochs=2)
    args = ["--dataset", "imagefolder", "--data-dir", str(image_tree), "--name", "run", "--output", str(tmp_path), "--epochs", "2",
            "--model", "wrn-10-1", "--image-size", "16", "--cutout", "8", "--batch-size", "4", "--device", "cpu", "--no-progress"]
    assert main([*args, "--method", "compact", "--resume"]) == 2
    stderr = capsys.readouterr().err.strip()
    assert stderr == (
        f"dada-search: error: the checkpoint in {str(tmp_path / 'run.checkpoint')!r} was made with other settings "
        f"(export: 'top-k' there, 'weighted' now, method: 'published' there, 'compact' now, top_k: 25 there, 225 now); "
        f"repeat the original settings to resume, or run with "
        f"--overwrite instead of --resume to start afresh"
    )


class _RecordingMethod:
    """A method that is not the loop's default: the published parts, reporting through its own summary."""

    name = "compact"
    history_shapes = PublishedMethod.history_shapes

    def __init__(self, built: list) -> None:
        self.built = built

    def build(self, settings, network, **options):
        run = PublishedMethod().build(settings, network, **options)
        run.summary = lambda count: f"recorded {count}"
        self.built.append(run)
        return run


def test_the_loop_runs_whatever_method_the_setting_names(image_tree, tmp_path, monkeypatch, capsys) -> None:
    built: list = []
    monkeypatch.setitem(methods_module._METHODS, "compact", lambda: _RecordingMethod(built))
    result = _search(image_tree, tmp_path, epochs=1, method="compact", draws=2, progress=True, top_k=25, export="top-k")
    assert len(built) == 1
    epoch_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch 1/1: loss ")]
    assert len(epoch_lines) == 1 and epoch_lines[0].endswith("; recorded 5"), epoch_lines
    assert result.policy.metadata["search"]["method"] == "compact"
    torch.testing.assert_close(result.parameters["alpha"], built[0].parameters.alpha.detach(), rtol=0, atol=0)


def test_a_compact_search_resumes_as_an_uninterrupted_one(image_tree, tmp_path, stopping_after_a_checkpoint) -> None:
    options = {"epochs": 2, "method": "compact", "draws": 2}
    straight = _search(image_tree, tmp_path / "straight", **options)
    with stopping_after_a_checkpoint(), pytest.raises(KeyboardInterrupt):
        _search(image_tree, tmp_path / "resumed", **options)
    with pytest.raises(SearchInputError, match=r"other settings \(.*method: 'compact' there, 'published' now"):
        _search(image_tree, tmp_path / "resumed", **{**options, "method": "published"}, resume=True)
    resumed = _search(image_tree, tmp_path / "resumed", **options, resume=True)
    assert set(resumed.parameters) == set(straight.parameters)
    for key, value in straight.parameters.items():
        torch.testing.assert_close(resumed.parameters[key], value, rtol=0, atol=0, msg=key)
    assert resumed.policy.metadata["history"] == straight.policy.metadata["history"]
