"""bench/digits_demo.py: the digits folders, the repeat check's comparison, and a tiny end-to-end run."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file


@pytest.fixture(scope="module")
def demo(bench_script):
    return bench_script("digits_demo")


def test_the_digits_are_written_as_a_stratified_image_folder(demo, tmp_path) -> None:
    from sklearn.datasets import load_digits

    assert demo.write_digits(tmp_path, 200) == (200, 1797 - 200)
    digits = load_digits()
    share = np.bincount(digits.target) / len(digits.target)
    counts = [len(list((tmp_path / "train" / str(label)).iterdir())) for label in range(10)]
    assert sum(counts) == 200 and np.all(np.abs(np.array(counts) - 200 * share) <= 1)
    with Image.open(next((tmp_path / "test" / "3").iterdir())) as image:
        assert image.size == (16, 16) and image.mode == "RGB"


def write_result(folder: Path, tensors: dict, metadata: dict, name: str = "result") -> Path:
    save_file(tensors, str(folder / f"{name}.safetensors"), metadata=metadata)
    digest = hashlib.sha256((folder / f"{name}.safetensors").read_bytes()).hexdigest()
    record = {"name": name, "metadata": {"parameters": {"file": f"{name}.safetensors", "sha256": digest}, "search": {"seed": 0}}}
    (folder / f"{name}.json").write_text(json.dumps(record))
    return folder / f"{name}.json"


def header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def reorder_metadata(path: Path, unlike: Path) -> None:
    """Rewrite a safetensors file with its ``__metadata__`` entries in the reverse order of ``unlike``'s (same tensors)."""
    fields, body = header(path)
    order = list(header(unlike)[0]["__metadata__"])[::-1]
    fields["__metadata__"] = {key: fields["__metadata__"][key] for key in order}
    encoded = json.dumps(fields, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)


TENSORS = {"alpha": torch.arange(105, dtype=torch.float32), "probabilities": torch.full((105, 2), 0.5)}
METADATA = {"format": "dada-search-parameters", "preset": "result", "library": "dada-transforms"}


def test_byte_identical_results_are_the_same(demo, tmp_path) -> None:
    (tmp_path / "a").mkdir()
    first = write_result(tmp_path / "a", TENSORS, METADATA)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert demo.compare_results(first, tmp_path / "b" / "result.json") == (True, "the .json and .safetensors files are byte-identical")


def test_results_differing_only_in_the_metadata_order_are_the_same(demo, tmp_path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = write_result(tmp_path / "a", TENSORS, METADATA)
    write_result(tmp_path / "b", TENSORS, METADATA)
    reorder_metadata(tmp_path / "b" / "result.safetensors", unlike=tmp_path / "a" / "result.safetensors")
    second = tmp_path / "b" / "result.json"
    record = json.loads(second.read_text())
    record["metadata"]["parameters"]["sha256"] = hashlib.sha256((tmp_path / "b" / "result.safetensors").read_bytes()).hexdigest()
    second.write_text(json.dumps(record))
    assert load_file(str(tmp_path / "b" / "result.safetensors")).keys() == TENSORS.keys()  # still a valid file
    assert (tmp_path / "a" / "result.safetensors").read_bytes() != (tmp_path / "b" / "result.safetensors").read_bytes()
    same, how = demo.compare_results(first, second)
    assert same and "only the order of the .safetensors header's __metadata__ entries differs" in how


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda tensors, metadata: tensors.update(alpha=TENSORS["alpha"] + 1e-6), "the tensors alpha differ"),
        (lambda tensors, metadata: tensors.update(alpha=TENSORS["alpha"].double()), "the tensors alpha differ"),
        (lambda tensors, metadata: tensors.pop("probabilities"), "the tensors differ in name: ['probabilities']"),
        (lambda tensors, metadata: metadata.update(preset="other"), "the safetensors metadata differ"),
    ],
)
def test_results_with_other_parameters_differ(change, message, demo, tmp_path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    tensors, metadata = dict(TENSORS), dict(METADATA)
    change(tensors, metadata)
    first, second = write_result(tmp_path / "a", TENSORS, METADATA), write_result(tmp_path / "b", tensors, metadata)
    assert demo.compare_results(first, second) == (False, message)


def test_results_with_another_policy_json_differ(demo, tmp_path) -> None:
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = write_result(tmp_path / "a", TENSORS, METADATA), write_result(tmp_path / "b", TENSORS, METADATA)
    record = json.loads(second.read_text())
    record["metadata"]["search"]["seed"] = 1
    second.write_text(json.dumps(record))
    assert demo.compare_results(first, second) == (False, "the policy JSON differs (beyond the SHA-256 of the .safetensors)")


@pytest.mark.parametrize("same", [True, False])
def test_the_demo_runs_the_searches_the_repeat_and_a_paired_evaluation(same, demo, tmp_path, monkeypatch, capsys) -> None:
    """The commands the script runs (recorded, not run: the whole demo takes minutes; see docs/search.md)."""
    commands = []
    monkeypatch.setattr(demo, "_run", commands.append)
    monkeypatch.setattr(demo, "describe_movement", lambda result: f"moved {result}")
    compared = []
    monkeypatch.setattr(demo, "compare_results", lambda a, b: compared.append((a, b)) or (same, "how"))
    folder = tmp_path / "demo"
    status = demo.main(["--dir", str(folder), "--check-repeat"])
    assert status == (0 if same else 1)
    searches = [command for command in commands if command[0] == "dada-search"]
    assert len(searches) == 3
    options = lambda command: [arg for arg in command if arg not in {str(folder / "policies"), str(folder / "repeat")}]
    assert options(searches[2]) == options(searches[0]) and "--overwrite" in searches[0]
    assert compared == [(folder / "policies" / "digits-per-batch.json", folder / "repeat" / "digits-per-batch.json")]
    out = capsys.readouterr().out
    if not same:
        assert "repeat check: DIFFERENT searched policies: how" in out and len(commands) == 3
        return
    assert "repeat check: the same searched policy: how" in out
    evaluate = commands[-1]
    assert evaluate[:4] == ["dada-transforms", "evaluate", str(folder / "policies" / "digits-per-batch.json"), str(folder / "policies" / "digits-per-sample.json")]
    assert evaluate[evaluate.index("--seeds") + 1] == "5" and "--no-flip" in evaluate
    assert evaluate[evaluate.index("--baselines") + 1] == "no-policy,initial,random,published,randaugment,autoaugment,trivialaugment"
    assert len(list((folder / "train").rglob("*.png"))) == 100
