"""Files that are read: FIFOs and devices refused at once, reads bounded, JSON numbers bounded, and a result's
JSON/safetensors pair checked by the SHA-256 the JSON records (issue 19, points 5, 7, 8 and 10).

A call that could block on a FIFO runs in a thread joined with a timeout; if it is
still blocked, the FIFO's other end is opened and closed to release it, and the test fails.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

import dada_transforms.hub
from dada_transforms import Policy, load_policy
from dada_transforms.cli import main
from dada_transforms.plot import load_search_history
from dada_transforms.search import AugmentationParameters
from dada_transforms.search.export import epoch_snapshot, export_result
from dada_transforms.search.output_files import output_paths

HUGE = "1" * 400  # a JSON integer too large for a float


def call_guarded(function, fifo: Path | None = None, timeout: float = 30.0):
    """``function()``'s return value, or the exception it raised; fails the test if it blocks."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 (handed to the test)
            outcome["value"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader sees end of file and returns
            thread.join(10)
        pytest.fail(f"blocked reading {fifo}")
    return outcome["value"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("dada-transforms: error: "), err
    return err.strip()


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo.png"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("where", ["image", "mask"])
def test_grid_refuses_a_fifo_at_once(where, fifo, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (90, 120, 200)).save(image)
    args = ["grid", "imagenet", str(fifo if where == "image" else image), "-o", str(tmp_path / "out.png")]
    args += ["--mask", str(fifo)] if where == "mask" else []
    assert call_guarded(lambda: main(args), fifo) == 2
    assert error_line(capsys) == f"dada-transforms: error: cannot read image {str(fifo)!r}: not a regular file"
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_push_refuses_parameters_that_are_not_a_regular_file(special, fifo, monkeypatch, capsys):
    path = fifo if special == "fifo" else Path(special)
    monkeypatch.setattr(dada_transforms.hub, "HfApi", None)  # nothing may be uploaded
    assert call_guarded(lambda: main(["push", "cifar10", "me/c10", "--parameters", str(path)]), fifo) == 2
    assert error_line(capsys) == f"dada-transforms: error: cannot read parameters file {str(path)!r}: not a regular file"


def _policy_text(probability: str) -> str:
    return (
        '{"format": "dada-policy", "version": 1, "name": "big", "sub_policies": '
        f'[[{{"op": "Rotate", "probability": {probability}, "magnitude": 0.5}}]]}}'
    )


def test_a_json_integer_too_large_for_a_float_is_a_clear_error(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(_policy_text(HUGE))
    with pytest.raises(ValueError, match=r"invalid policy file '.*big.json': the integer 1111111111\d*\.\.\. has 400 digits"):
        Policy.from_json(path)
    path.write_text(_policy_text("1e400"))
    with pytest.raises(ValueError, match="1e400 is not JSON"):
        Policy.from_json(path)


def test_one_bad_user_preset_does_not_break_list_show_or_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DADA_PRESET_DIR", str(tmp_path))
    (tmp_path / "big.json").write_text(_policy_text(HUGE))
    Policy.from_list([[("Equalize", 0.9, 0.0)]], name="mine").to_json(tmp_path / "mine.json")
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mine " in out and "user preset files that do not load by name:" in out
    assert f"invalid policy file {str(tmp_path / 'big.json')!r}: the integer" in out
    assert main(["show", "mine"]) == 0
    assert load_policy("mine").name == "mine"
    with pytest.raises(ValueError, match="has 400 digits"):
        load_policy(str(tmp_path / "big.json"))


def test_wrong_case_operation_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown operation 'ROTATE' \(did you mean 'Rotate'"):
        Policy.from_list([[("ROTATE", 0.5, 0.5)]])


def test_a_loop_of_symbolic_links_is_not_reported_as_missing(tmp_path):
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    with pytest.raises(ValueError, match=r"cannot use '.*a.json' as a policy file: Too many levels of symbolic links"):
        load_policy(str(tmp_path / "a.json"))


def _result(folder: Path, seed: int) -> Path:
    """A dada-search result with a 2-epoch history, as export_result writes it."""
    import torch

    torch.manual_seed(seed)
    augmentation = AugmentationParameters()
    with torch.no_grad():
        augmentation.alpha.normal_()
    history = [{"epoch": epoch, "loss": 1.0, "accuracy": 0.5, **epoch_snapshot(augmentation)} for epoch in (1, 2)]
    paths = output_paths(folder, "run")
    export_result(augmentation, paths, "run", 25, {"search": {}, "history": history})
    return paths.policy


def test_a_result_pair_from_two_searches_is_refused_by_plot_and_push(tmp_path, monkeypatch, capsys):
    policy_file = _result(tmp_path / "a", seed=0)
    other = _result(tmp_path / "b", seed=1)
    assert load_search_history(policy_file).name == "run"  # a true pair
    tensor_file = policy_file.with_suffix(".safetensors")
    tensor_file.write_bytes(other.with_suffix(".safetensors").read_bytes())  # e.g. a kill between the two writes
    digest = hashlib.sha256(tensor_file.read_bytes()).hexdigest()
    message = f"{str(tensor_file)!r} does not belong to {str(policy_file)!r}: its SHA-256 is {digest[:12]}..."
    with pytest.raises(ValueError) as error:
        load_search_history(policy_file)
    assert str(error.value).startswith(message)
    monkeypatch.setattr(dada_transforms.hub, "HfApi", None)  # nothing may be uploaded
    assert main(["push", str(policy_file), "me/run"]) == 2
    line = error_line(capsys)
    assert f"parameters file {str(tensor_file)!r} does not belong to {str(policy_file)!r}" in line
