"""dada-search under faults and bad input: clear one-line errors (exit 2), no lost work, no mixed results.

Tiny data (3 classes x 8 images, 8 px), wrn-10-1, 1-2 epochs of 3 steps, on the CPU.
Most cases run ``dada-search`` in this process through ``cli.main``; a few run the
console script for its exit status, start-up and signals.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import dada_transforms.hub as hub
import dada_transforms.search.checkpoint as checkpoint_module
import dada_transforms.search.export as export_module
import dada_transforms.search.loop as loop_module
from dada_transforms import Policy
from dada_transforms.search.bilevel import BilevelSearchStep
from dada_transforms.search.cli import build_parser, main
from dada_transforms.search.output_files import output_paths
from dada_transforms.search.output_lock import OutputLock

TINY = ["--model", "wrn-10-1", "--image-size", "8", "--cutout", "4", "--batch-size", "4", "--device", "cpu", "--no-progress"]
CANNOT_RESUME = "; remove that folder, or run with --overwrite instead of --resume to start afresh"


def make_tree(root: Path, classes: int = 3, per_class: int = 8, seed: int = 0) -> Path:
    rng = np.random.RandomState(seed)
    for label in range(classes):
        (root / f"class{label}").mkdir(parents=True)
        for index in range(per_class):
            pixels = (rng.rand(10, 12, 3) * 120 + 60 * label).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{label}" / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "images")


def args_for(tree: Path, output: Path, *extra: str, name: str = "run", epochs: int = 2) -> list[str]:
    return ["--dataset", "imagefolder", "--data-dir", str(tree), "--epochs", str(epochs), "--name", name,
            "--output", str(output), *TINY, *extra]


def run_main(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exit:
        return exit.code


def error_line(capsys) -> str:
    """The one stderr line of a failed run."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("dada-search: "), err
    return err.strip()


@pytest.fixture(scope="module")
def interrupted(tree, tmp_path_factory, stopping_after_a_checkpoint) -> Path:
    """An output folder holding the checkpoint of epoch 1 of a 2-epoch search that was interrupted."""
    output = tmp_path_factory.mktemp("interrupted")
    with stopping_after_a_checkpoint():
        assert run_main(*args_for(tree, output)) == 130
    assert json.loads((output / "run.checkpoint" / "checkpoint.json").read_text())["epoch"] == 1
    return output


@pytest.fixture
def output(interrupted, tmp_path) -> Path:
    """A copy of the interrupted search's output folder."""
    return Path(shutil.copytree(interrupted, tmp_path / "out"))


def run_script(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(["dada-search", *args], capture_output=True, text=True, timeout=120, **options)


# --- command line ---------------------------------------------------------------------------------


def test_version() -> None:
    version = run_script("--version")
    assert version.returncode == 0 and version.stdout.strip() == "dada-search (dada-transforms) 0.1.0"


def test_every_argument_has_help() -> None:
    actions = build_parser()._actions
    assert len(actions) > 20
    for action in actions:
        assert action.help and len(action.help) > 10, action.dest


def test_python_dash_m_checks_arguments_before_the_heavy_imports(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("a file")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dada_transforms.search", "--dataset", "cifar10", "--name", "x",
         "--output", str(tmp_path / "a.txt" / "b")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "dada_transforms.search.cli" in imported
    assert not imported & {"dada_transforms.search.loop", "timm", "safetensors"}
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == [
        f"dada-search: error: output folder {str(tmp_path / 'a.txt' / 'b')!r} cannot be created: "
        f"{str(tmp_path / 'a.txt')!r} is a file, not a folder"
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--push-to-hub", "a--b/c"], "error: --push-to-hub: a Hub repository id must look like 'org/name'"),
        (["--model", "wrn-10-100000"], "error: model 'wrn-10-100000' has 739,846,734,401,480 parameters"),
        (["--device", "meta"], "error: device must be cpu, cuda or cuda:N, got 'meta'"),
        (["--resume", "--overwrite"], "argument --overwrite: not allowed with argument --resume"),
        (["--bad-images", "ignore"], "argument --bad-images: invalid choice: 'ignore'"),
    ],
)
def test_bad_arguments_stop_before_the_data_is_read(extra, message, tmp_path, capsys) -> None:
    # The data folder does not exist: each error must come first.
    assert run_main(*args_for(tmp_path / "no-data", tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_interrupted_start_up_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop_module, "search", interrupt)
    assert run_main(*args_for(tmp_path, tmp_path / "out")) == 130
    assert error_line(capsys) == "dada-search: interrupted"


# --- output folder --------------------------------------------------------------------------------


def test_output_problems_are_found_before_the_data(tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "out" / "run.json").mkdir(parents=True)
    cases = [
        (tmp_path / "file", "run", f"output folder {str(tmp_path / 'file')!r} cannot be created: "),
        (tmp_path / "file" / "sub", "run", "is a file, not a folder"),
        (tmp_path / "out", "run", f"{str(tmp_path / 'out' / 'run.json')!r} is a folder"),
        (tmp_path / "out", "n" * 300, "preset name is 300 characters long; at most 229 fit in file names"),
    ]
    for output, name, message in cases:
        assert run_main(*args_for(tmp_path / "no-data", output, name=name)) == 2
        assert message in error_line(capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_read_only_output_folder(tmp_path, capsys) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        assert run_main(*args_for(tmp_path / "no-data", tmp_path / "ro" / "out")) == 2
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert "cannot write to the output folder: " in error_line(capsys)


def test_builtin_name_guard_resolves_relative_paths(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DADA_PRESET_DIR", str(tmp_path / "presets"))
    monkeypatch.chdir(tmp_path)
    for spelling in ("presets", "./presets/../presets", str(tmp_path / "presets")):
        assert run_main(*args_for(tmp_path / "no-data", Path(spelling), name="imagenet")) == 2
        assert "preset name 'imagenet' is a built-in preset" in error_line(capsys)


def test_a_search_that_fails_on_its_input_leaves_no_output_folder(tmp_path, capsys) -> None:
    assert run_main(*args_for(tmp_path / "no-data", tmp_path / "new" / "out")) == 2
    assert "does not exist" in error_line(capsys)
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # neither new/ nor new/out/


@pytest.mark.parametrize("target", ["folder", "missing"])
def test_a_checkpoint_folder_that_is_a_symbolic_link_is_refused_at_set_up(target, tmp_path, capsys) -> None:
    elsewhere = tmp_path / "elsewhere"
    if target == "folder":
        elsewhere.mkdir()
        (elsewhere / "checkpoint.json").write_text("{}")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.checkpoint").symlink_to(elsewhere)
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert run_main(*args_for(tmp_path / "no-data", tmp_path / "out", *extra)) == 2
        assert error_line(capsys) == (
            f"dada-search: error: {str(tmp_path / 'out' / 'run.checkpoint')!r} is a symbolic link (to {str(elsewhere)!r}); "
            f"the search keeps its checkpoints in a folder of its own there: remove the link"
        )
    assert (tmp_path / "out" / "run.checkpoint").is_symlink()


# --- finished results and checkpoints: refusing to discard, resuming, validation ---------------------


def test_a_finished_result_is_not_replaced_without_overwrite(tmp_path, capsys) -> None:
    output = tmp_path / "out"
    output.mkdir()
    for present in ("run.json", "run.safetensors"):
        (output / present).write_text("a finished result")
        assert run_main(*args_for(tmp_path / "no-data", output)) == 2
        assert error_line(capsys) == (
            f"dada-search: error: {str(output / present)!r} holds the result of a finished search: run with "
            f"--overwrite to replace it, or choose another --name or --output"
        )
        assert run_main(*args_for(tmp_path / "no-data", output, "--resume")) == 2
        assert error_line(capsys) == (
            f"dada-search: error: the search is finished: {str(output / present)!r} holds its result and there is no "
            f"checkpoint to resume; run with --overwrite instead of --resume to search again and replace it"
        )
        assert (output / present).read_text() == "a finished result"
        (output / present).unlink()
    # --overwrite gets past the guard (here to the missing data).
    (output / "run.json").write_text("a finished result")
    assert run_main(*args_for(tmp_path / "no-data", output, "--overwrite")) == 2
    assert "does not exist" in error_line(capsys) and (output / "run.json").read_text() == "a finished result"


def test_an_incomplete_checkpoint_is_not_deleted(tmp_path, capsys) -> None:
    checkpoint = tmp_path / "out" / "run.checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "epoch-0003.safetensors").write_bytes(b"tensors of an epoch")
    for extra in ([], ["--resume"]):
        assert run_main(*args_for(tmp_path / "no-data", tmp_path / "out", *extra)) == 2
        assert error_line(capsys) == (
            f"dada-search: error: {str(checkpoint)!r} holds epoch-0003.safetensors but no checkpoint.json (an "
            f"incomplete checkpoint, which cannot be resumed): remove that folder, or run with --overwrite to discard "
            f"it and start afresh"
        )
    assert (checkpoint / "epoch-0003.safetensors").read_bytes() == b"tensors of an epoch"


def test_resume_with_nothing_to_resume_says_so_and_starts_afresh(tree, tmp_path, capsys) -> None:
    assert run_main(*args_for(tree, tmp_path / "out", "--resume", epochs=1)) == 0
    err = capsys.readouterr().err
    assert f"dada-search: nothing to resume in {str(tmp_path / 'out' / 'run.checkpoint')!r}: starting afresh\n" in err
    assert (tmp_path / "out" / "run.json").is_file()


# --- interrupted searches: refusing to discard, resuming, validation -----------------------------------------


def test_a_checkpoint_is_not_discarded_without_overwrite(tree, output, capsys) -> None:
    checkpoint = output / "run.checkpoint"
    assert run_main(*args_for(tree, output)) == 2
    assert error_line(capsys) == (
        f"dada-search: error: {str(checkpoint)!r} holds the checkpoint of an interrupted search after epoch 1: "
        f"run the same command with --resume to continue it, or with --overwrite to discard it and start afresh"
    )
    assert (checkpoint / "checkpoint.json").is_file()
    # Stale temporaries of this name (not another name's) go on the next run.
    ours = [output / ".run.json.abcd1234.tmp", output / ".run.safetensors.abcd_123.tmp", checkpoint / ".checkpoint.json.x1y2z3w4.tmp"]
    theirs = output / ".other.json.abcd1234.tmp"
    for path in [*ours, theirs]:
        path.write_text("partial")
    assert run_main(*args_for(tree, output, "--overwrite", epochs=1)) == 0
    assert not any(path.exists() for path in ours) and theirs.exists()
    assert sorted(path.name for path in output.iterdir()) == [".other.json.abcd1234.tmp", "run.json", "run.safetensors"]
    # The JSON, written last, names the safetensors it goes with.
    policy = Policy.from_json(output / "run.json")
    digest = hashlib.sha256((output / "run.safetensors").read_bytes()).hexdigest()
    assert policy.metadata["parameters"] == {"file": "run.safetensors", "sha256": digest}


def _index(output: Path) -> dict:
    return json.loads((output / "run.checkpoint" / "checkpoint.json").read_text())


def _set_index(output: Path, index) -> None:
    (output / "run.checkpoint" / "checkpoint.json").write_text(json.dumps(index))


def _edit_tensors(output: Path, edit) -> None:
    """Rewrite the checkpoint's tensors with ``edit`` applied, and record their new hash (a consistent forgery)."""
    path = output / "run.checkpoint" / "epoch-0001.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))
    index = _index(output)
    index["tensors_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    _set_index(output, index)


def _truncate(output: Path, keep_hash: bool) -> None:
    path = output / "run.checkpoint" / "epoch-0001.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    if not keep_hash:
        index = _index(output)
        index["tensors_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        _set_index(output, index)


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _first_model_key(tensors: dict) -> str:
    return next(key for key in tensors if key.startswith("model.") and tensors[key].is_floating_point())


def _with(key: str, value):
    def edit(output: Path) -> None:
        index = _index(output)
        index[key] = value
        _set_index(output, index)

    return edit


def _nested(output: Path) -> None:
    text = (output / "run.checkpoint" / "checkpoint.json").read_text()
    deep = '{"list": [' * 100_000 + "]}" * 100_000
    (output / "run.checkpoint" / "checkpoint.json").write_text(text.replace('"step": {', f'"step": {deep}, "x": {{', 1))


CORRUPTIONS = {
    "json list": (lambda output: _set_index(output, [1, 2]), "checkpoint.json must hold a JSON object, got a list"),
    "not json": (
        lambda output: (output / "run.checkpoint" / "checkpoint.json").write_text('{"epoch": '),
        "Expecting value: line 1 column 11",
    ),
    "string epoch": (_with("epoch", "1"), "'epoch' must be an integer in [1, 2] (the search's epochs), got '1'"),
    "negative epoch": (_with("epoch", -1), "'epoch' must be an integer in [1, 2] (the search's epochs), got -1"),
    "epoch 999": (_with("epoch", 999), "'epoch' must be an integer in [1, 2] (the search's epochs), got 999"),
    "history not a list": (_with("history", {"epoch": 1}), "'history' must be a list of 1 entries"),
    "nan in history": (_with("history", [{"epoch": 1, "loss": None}]), "history entry 1's 'loss' must be finite numbers"),
    "short history snapshot": (
        _with("history", [{"epoch": 1, "loss": 0.5, "magnitudes": [0.5] * 209}]),
        "history entry 1's 'magnitudes' must be a list of 210 numbers",
    ),
    "setting of another type": (
        lambda output: _set_index(output, {**_index(output), "settings": {**_index(output)["settings"], "epochs": 2.0}}),
        "setting 'epochs' is 2.0, not a int",
    ),
    "tensor file elsewhere": (_with("tensors", "../../etc/passwd"), "'tensors' must be 'epoch-0001.safetensors'"),
    "tensor file a FIFO": (
        lambda output: _replace_with_fifo(output / "run.checkpoint" / "epoch-0001.safetensors"),
        "cannot read tensor file",
    ),
    "deeply nested": (_nested, "checkpoint.json: the JSON is nested too deeply"),
    "truncated tensors": (lambda output: _truncate(output, keep_hash=True), "does not match its SHA-256 in checkpoint.json"),
    "truncated tensors, hash forged": (lambda output: _truncate(output, keep_hash=False), "cannot resume from"),
    "bit flip": (
        lambda output: _flip_a_bit(output),
        "epoch-0001.safetensors does not match its SHA-256 in checkpoint.json (changed or damaged)",
    ),
    "non-finite tensor": (
        lambda output: _edit_tensors(output, lambda t: t[_first_model_key(t)].view(-1).__setitem__(0, float("nan"))),
        "holds non-finite values",
    ),
    "wrong shape": (
        lambda output: _edit_tensors(output, lambda t: t.update({_first_model_key(t): torch.zeros(7)})),
        "is torch.float32 (7,), expected torch.float32",
    ),
    "wrong dtype": (
        lambda output: _edit_tensors(output, lambda t: t.update({"augmentation.alpha": t["augmentation.alpha"].double()})),
        "augmentation tensor 'alpha' is torch.float64 (105,), expected torch.float32 (105,)",
    ),
    "missing optimiser tensor": (
        lambda output: _edit_tensors(output, lambda t: t.pop(next(key for key in t if key.startswith("step.")))),
        "optimiser state names a tensor that is not in the tensor file",
    ),
}


def _group_setting(optimizer: str, key: str, value):
    """Set a hyperparameter of the checkpoint's ``optimizer`` (e.g. "arch_optimizer") in checkpoint.json."""

    def edit(output: Path) -> None:
        index = _index(output)
        group = index["step"]["dict"][optimizer]["dict"]["param_groups"]["list"][0]["dict"]
        group[key] = {"value": value}
        _set_index(output, index)

    return edit


def _history_edit(**changes):
    def edit(output: Path) -> None:
        text = (output / "run.checkpoint" / "checkpoint.json").read_text()
        index = json.loads(text)
        for key, value in changes.items():
            if value is None:
                del index["history"][0][key]
            else:
                index["history"][0][key] = "@@"
        text = json.dumps(index)
        for value in changes.values():
            if value is not None:
                text = text.replace('"@@"', value, 1)
        (output / "run.checkpoint" / "checkpoint.json").write_text(text)

    return edit


# Issue 19, points 3 and 8: the optimisers' settings and the history are checked, numbers bounded.
CORRUPTIONS.update({
    "arch lr changed": (
        _group_setting("arch_optimizer", "lr", 0.105),
        "arch optimiser learning rate is 0.105, this search's settings give 0.005",
    ),
    "arch lr 1e300": (
        _group_setting("arch_optimizer", "lr", 1e300),
        "arch optimiser learning rate is 1e+300, this search's settings give 0.005",
    ),
    "weight lr above the schedule": (
        _group_setting("weight_optimizer", "lr", 1e300), "weight optimiser learning rate is 1e+300, this search's settings give in [0, "
    ),
    "400-digit integer": (_history_edit(loss="1" * 400), "checkpoint.json: the integer 111111111111... has 400 digits"),
    "accuracy above 1": (_history_edit(accuracy="7.5"), "history entry 1's 'accuracy' must be in [0, 1], got 7.5"),
    "probability below 0": (
        _history_edit(probabilities="[" + ", ".join(["-0.5"] * 210) + "]"), "history entry 1's 'probabilities' must be in [0, 1]"
    ),
    "history key missing": (_history_edit(accuracy=None), "history entry 1 must have exactly the keys"),
    "history key added": (_history_edit(note="3"), "history entry 1 must have exactly the keys"),
})


def _flip_a_bit(output: Path) -> None:
    path = output / "run.checkpoint" / "epoch-0001.safetensors"
    content = bytearray(path.read_bytes())
    content[-5] ^= 0x10
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_resume_validates_the_checkpoint(case, tree, output, capsys) -> None:
    corrupt, message = CORRUPTIONS[case]
    corrupt(output)
    assert run_main(*args_for(tree, output, "--resume")) == 2
    line = error_line(capsys)
    assert line.startswith(f"dada-search: error: cannot resume from {str(output / 'run.checkpoint')!r}: "), line
    assert message in line and line.endswith(CANNOT_RESUME), line
    assert not (output / "run.json").exists()


def test_resume_refuses_other_data(tree, output, tmp_path, capsys) -> None:
    other = make_tree(tmp_path / "other", seed=1)
    assert run_main(*args_for(other, output, "--resume")) == 2
    assert error_line(capsys) == (
        f"dada-search: error: the checkpoint in {str(output / 'run.checkpoint')!r} was made on other data "
        f"(the contents differ); resume with the data it was made on, or run with --overwrite instead of --resume "
        f"to start afresh"
    )
    (other / "class2" / "7.png").unlink()
    assert run_main(*args_for(other, output, "--resume")) == 2
    assert "was made on other data (24 images there, 23 now)" in error_line(capsys)
    (other / "class2").rename(other / "class3")
    assert run_main(*args_for(other, output, "--resume")) == 2
    assert (
        "was made on other data (24 images there, 23 now; 3 classes ['class0', 'class1', 'class2'] there, "
        "3 classes ['class0', 'class1', 'class3'] now)"
    ) in error_line(capsys)


# --- failures during and after the search ---------------------------------------------------------


def test_divergence_stops_with_a_clear_error(tree, tmp_path, capsys) -> None:
    assert run_main(*args_for(tree, tmp_path / "out", "--lr", "1e30")) == 2
    line = error_line(capsys)
    assert line.startswith("dada-search: error: the search diverged: the training loss became nan in epoch 1 (by step 3)")
    assert "run it again with a lower --lr (now 1e+30)" in line and line.endswith("nothing was saved")
    assert not (tmp_path / "out" / "run.json").exists()


def test_divergence_keeps_the_last_good_checkpoint(tree, output, capsys, monkeypatch) -> None:
    before = (output / "run.checkpoint" / "epoch-0001.safetensors").read_bytes()
    real_step, calls = BilevelSearchStep.step, []

    def step_then_poison(self, *args, **kwargs):  # the last step of epoch 2 leaves a NaN in a parameter
        stats = real_step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                self.augmentation.alpha.fill_(float("nan"))
        return stats

    monkeypatch.setattr(BilevelSearchStep, "step", step_then_poison)
    assert run_main(*args_for(tree, output, "--resume")) == 2
    line = error_line(capsys)
    assert line.startswith("dada-search: error: the search diverged: augmentation parameter 'alpha' became non-finite in epoch 2; ")
    assert line.endswith(f"the checkpoint of epoch 1, the last good one, is kept in {str(output / 'run.checkpoint')!r} (--overwrite discards it)")
    assert (output / "run.checkpoint" / "epoch-0001.safetensors").read_bytes() == before
    assert _index(output)["epoch"] == 1


def test_write_failures_keep_the_last_checkpoint_and_push_failures_keep_the_result(tree, output, capsys, monkeypatch) -> None:
    def disk_full(path, content):
        raise OSError(28, "No space left on device")

    checkpoint = output / "run.checkpoint"
    monkeypatch.setattr(checkpoint_module, "write_bytes_atomic", disk_full)
    assert run_main(*args_for(tree, output, "--resume")) == 2
    assert error_line(capsys) == (
        f"dada-search: error: cannot write the checkpoint of epoch 2 to {str(checkpoint)!r}: No space left on device; "
        f"the checkpoint of epoch 1 there is intact: fix that and run the same command with --resume"
    )
    monkeypatch.undo()
    monkeypatch.setattr(export_module, "write_bytes_atomic", disk_full)
    assert run_main(*args_for(tree, output, "--resume")) == 2
    assert error_line(capsys) == (
        f"dada-search: error: cannot write the result to {str(output)!r}: No space left on device; the checkpoint "
        f"of the last epoch in {str(checkpoint)!r} is intact: fix that and run the same command with --resume "
        f"to write the result again"
    )
    assert _index(output)["epoch"] == 2 and not (output / "run.json").exists()
    monkeypatch.undo()

    def offline(*args, **kwargs):
        raise ValueError("cannot push to 'org/run': HF_HUB_OFFLINE=1 is set; unset it to upload")

    monkeypatch.setattr(hub, "push_preset", offline)
    assert run_main(*args_for(tree, output, "--resume", "--push-to-hub", "org/run")) == 2
    policy = output / "run.json"
    assert error_line(capsys) == (
        f"dada-search: error: the search is done and its result is on disk ({str(policy)!r} and 'run.safetensors'), "
        f"but pushing it to 'org/run' failed: cannot push to 'org/run': HF_HUB_OFFLINE=1 is set; unset it to upload; "
        f"push it later with: dada-transforms push {policy} org/run"
    )
    assert Policy.from_json(policy).metadata["search"]["epochs"] == 2 and not checkpoint.exists()


def test_corrupt_image_is_named_and_can_be_skipped(tmp_path, capsys) -> None:
    tree = make_tree(tmp_path / "images")
    bad = tree / "class1" / "3.png"
    bad.write_bytes(b"not a png")
    assert run_main(*args_for(tree, tmp_path / "out")) == 2
    assert error_line(capsys) == (
        f"dada-search: error: cannot read image {str(bad)!r} (not an image format that Pillow reads); fix or remove it, "
        f"or pass --bad-images skip (bad_images='skip' in Python) to leave unreadable images out"
    )


# --- one output name, one search ------------------------------------------------------------------


def test_a_second_search_on_the_same_output_name_is_refused(tree, tmp_path, capsys) -> None:
    paths = output_paths(tmp_path / "out", "run")
    with OutputLock(paths):
        assert run_main(*args_for(tree, tmp_path / "out" / ".." / "out")) == 2
        assert error_line(capsys) == (
            f"dada-search: error: another dada-search is writing 'run' to {str(tmp_path / 'out')!r} "
            f"(it holds {str(paths.lock)!r}); wait for it to finish or choose another --name or --output"
        )
    assert not paths.lock.exists()


def test_concurrent_console_scripts_and_ctrl_c(tree, tmp_path) -> None:
    output = tmp_path / "out"
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny model: threads only contend on a busy machine
    # Ctrl+C as in a terminal, also where this test run ignores SIGINT (a background job), as a child would
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    first = subprocess.Popen(
        ["dada-search", *args_for(tree, output, epochs=1000)],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=one_thread,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if ignored else None,
    )

    def wait_for(path: Path) -> None:
        deadline = time.monotonic() + 100
        while not path.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        wait_for(output / ".run.lock")
        second = run_script(*args_for(tree, output, epochs=1000), env=one_thread)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("dada-search: error: another dada-search is writing 'run' to ")
        wait_for(output / "run.checkpoint" / "checkpoint.json")
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130
    assert err.startswith("dada-search: interrupted; run it again with --resume to continue after epoch "), err
    assert err.count("\n") == 1 and not (output / ".run.lock").exists()
