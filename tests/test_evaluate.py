"""dada-transforms evaluate on a tiny image folder, on the CPU: the console script, a known answer, the errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.model_selection import StratifiedShuffleSplit

from dada_transforms import Policy
from dada_transforms.cli import main
from dada_transforms.ops import OPERATION_NAMES
from dada_transforms.search.batches import crop_and_flip
from dada_transforms.search.evaluate import evaluate, random_policy

TINY = ["--model", "wrn-10-1", "--image-size", "16", "--batch-size", "12", "--device", "cpu"]
TINY_API = {"model": "wrn-10-1", "image_size": 16, "batch_size": 12, "device": "cpu", "progress": False}


def write_tree(root, classes=3, per_class=16, seed=0):
    """Classes told apart by brightness (class k around 40 + 85 k): a network learns them in a few steps."""
    rng = np.random.RandomState(seed)
    for label in range(classes):
        (root / f"class{label}").mkdir(parents=True)
        for index in range(per_class):
            pixels = (rng.rand(16, 16, 3) * 40 + 20 + 85 * label).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{label}" / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("images"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    executable = shutil.which("dada-transforms")
    command = [executable] if executable else [sys.executable, "-m", "dada_transforms"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


def run_main(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exit:
        return exit.code


def test_cli_evaluates_each_condition_per_seed_and_writes_table_json_and_chart(image_tree, tmp_path) -> None:
    chart, report = tmp_path / "out" / "chart.png", tmp_path / "out" / "scores.json"
    result = run_cli(
        "evaluate", "cifar10", "--dataset", "imagefolder", "--data-dir", str(image_tree), "--holdout", "0.25",
        "--epochs", "1", "--seeds", "2", *TINY, "-o", str(chart), "--json", str(report),
    )
    assert result.returncode == 0, result.stderr
    assert "5 conditions x 2 seeds" in result.stderr and "no-policy, seed 1: held-out accuracy" in result.stderr
    scores = json.loads(report.read_text())
    names = ["cifar10", "no-policy", "random", "autoaugment", "trivialaugment"]
    assert [condition["name"] for condition in scores["conditions"]] == names
    assert scores["seeds"] == [0, 1]

    # the held-out part is scikit-learn's stratified split of the folder
    labels = np.repeat(np.arange(3), 16)
    train, test = next(StratifiedShuffleSplit(1, train_size=36, random_state=0).split(np.zeros(48), labels))
    assert (scores["setup"]["train_images"], scores["setup"]["test_images"]) == (len(train), len(test)) == (36, 12)
    table = result.stdout.splitlines()
    assert table[0].split()[:3] == ["condition", "accuracy", "(%)"]
    for row, condition in zip(table[1:], scores["conditions"]):
        accuracies = condition["accuracies"]
        assert len(accuracies) == 2 and all(float(12 * a).is_integer() for a in accuracies)
        assert condition["mean"] == pytest.approx(np.mean(accuracies))
        assert condition["std"] == pytest.approx(np.std(accuracies, ddof=1))
        name, mean, _, std, *runs = row.split()
        assert name == condition["name"]
        assert [float(mean), float(std)] == pytest.approx([100 * condition["mean"], 100 * condition["std"]], abs=0.006)
        assert [float(run) for run in runs] == pytest.approx([100 * a for a in accuracies], abs=0.006)
    assert f"wrote {chart}" in result.stdout and f"wrote {report}" in result.stdout
    with Image.open(chart) as picture:
        assert picture.format == "PNG" and picture.width > 400 and picture.height > 300
    assert sorted(path.name for path in chart.parent.iterdir()) == ["chart.png", "scores.json"]  # no temporary files


def test_a_policy_augments_the_training_images_only(image_tree) -> None:
    """Trained on inverted images, scored on upright ones: the dark and bright classes swap (known answer)."""
    inverted = Policy.from_list([[("Invert", 1.0, 0.5)]], name="invert")
    never = Policy.from_list([[("Invert", 0.0, 0.5)]], name="never")
    evaluation = evaluate(
        [inverted, never], "imagefolder", data_dir=image_tree, holdout=0.25, epochs=6, seeds=1, cutout=0,
        baselines=["no-policy"], **TINY_API,
    )
    scores = {condition.name: condition.accuracies[0] for condition in evaluation.conditions}
    assert scores["no-policy"] == 1.0
    assert scores["never"] == 1.0
    assert scores["invert"] <= 5 / 12  # at most the middle class and a little luck


def test_random_policy_has_the_shape_asked_for() -> None:
    shape = [2, 2, 1, 3]
    policy = random_policy(shape, seed=3)
    assert [len(sub_policy) for sub_policy in policy] == shape
    for sub_policy in policy:
        indices = [OPERATION_NAMES.index(operation.op) for operation in sub_policy]
        assert indices == sorted(set(indices))  # distinct operations, in list order
        assert all(0 <= operation.probability <= 1 and 0 <= operation.magnitude <= 1 for operation in sub_policy)
    assert random_policy(shape, seed=3).to_dict() == policy.to_dict()
    assert random_policy(shape, seed=4).to_dict() != policy.to_dict()


def test_random_baseline_takes_the_shape_of_the_first_policy(image_tree) -> None:
    single = Policy.from_list([[("Invert", 0.5, 0.5)]] * 3, name="three-singles")
    evaluation = evaluate(
        [single], "imagefolder", data_dir=image_tree, holdout=0.25, epochs=1, seeds=1, baselines=["random"], **TINY_API
    )
    assert evaluation.conditions[1].description.startswith("a random policy of 3 sub-policies of 1 operations")


def test_a_test_folder_is_scored_and_must_have_the_same_classes(image_tree, tmp_path, capsys) -> None:
    test_tree = write_tree(tmp_path / "held-out", per_class=4, seed=1)
    evaluation = evaluate(
        [], "imagefolder", data_dir=image_tree, test_dir=test_tree, epochs=1, seeds=1, baselines=["no-policy"], **TINY_API
    )
    assert (evaluation.setup["train_images"], evaluation.setup["test_images"]) == (48, 12)
    other = write_tree(tmp_path / "other", classes=2, per_class=2)
    (other / "class1").rename(other / "dogs")
    status = run_main(
        "evaluate", "--dataset", "imagefolder", "--data-dir", str(image_tree), "--test-dir", str(other),
        "--baselines", "no-policy", "--no-chart", *TINY,
    )
    error = capsys.readouterr().err
    assert status == 2 and "must have the same class folders" in error and "'dogs'" in error


@pytest.mark.parametrize(
    "args, message",
    [
        (["--baselines", "no-policy,cutmix"], "unknown baseline 'cutmix'; baselines are no-policy, random, autoaugment"),
        (["--seeds", "0"], "seeds must be an integer in [1, 100], got 0"),
        (["no-such-preset"], "cannot load policy 'no-such-preset': unknown preset"),
        (["--baselines", ""], "nothing to evaluate: give at least one policy or baseline"),
        (["--holdout", "1.5"], "holdout must be a fraction between 0 and 1 (exclusive), got 1.5"),
        (["-o", "chart.jpg"], "the chart must be a .png file, got 'chart.jpg'"),
        (["--json", "scores.txt"], "--json must name a .json file, got 'scores.txt'"),
        (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
        (["--model", "wrn-11-1"], "Wide-ResNet 'wrn-11-1': depth must be 6n + 4"),
    ],
)
def test_bad_arguments_are_one_line_errors_and_write_nothing(args, message, image_tree, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status = run_main("evaluate", "--dataset", "imagefolder", "--data-dir", str(image_tree), *TINY, *args)
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("dada-transforms: error: ") and message in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "mnist"], "dataset must be one of cifar10, cifar100, svhn"),
        (["--dataset", "imagefolder"], "--dataset imagefolder needs --data-dir DIR"),
        (["--dataset", "reduced-cifar10", "--test-dir", "x"], "--test-dir is for --dataset imagefolder"),
    ],
)
def test_bad_data_is_a_one_line_error(args, message, capsys) -> None:
    assert run_main("evaluate", *args, "--no-chart", *TINY) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_missing_matplotlib_names_the_extra_before_training(image_tree, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    status = run_main("evaluate", "--dataset", "imagefolder", "--data-dir", str(image_tree), *TINY, "-o", str(tmp_path / "c.png"))
    error = capsys.readouterr().err
    assert status == 2 and "pip install 'dada-transforms[plot]'" in error and error.count("\n") == 1
    assert not os.listdir(tmp_path)


def test_no_flip_draws_the_same_crops_unmirrored() -> None:
    """``--no-flip``: the crops of the flipping pipeline, from the same random stream, never mirrored."""
    images = torch.arange(16 * 36, dtype=torch.uint8).reshape(16, 1, 6, 6)
    flipped = crop_and_flip(images, 2, torch.Generator().manual_seed(0))
    plain = crop_and_flip(images, 2, torch.Generator().manual_seed(0), flip=False)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    mirrored = 0
    for image, crop, reference in zip(padded, plain, flipped):
        windows = [image[:, top : top + 6, left : left + 6] for top in range(5) for left in range(5)]
        assert any(torch.equal(crop, window) for window in windows)
        assert torch.equal(reference, crop) or torch.equal(reference, crop.flip(-1))
        mirrored += not torch.equal(reference, crop)
    assert mirrored > 0


def test_an_unwritable_chart_is_refused_before_training(image_tree, tmp_path, capsys) -> None:
    (tmp_path / "a-file").write_text("")
    chart = tmp_path / "a-file" / "chart.png"
    status = run_main("evaluate", "--dataset", "imagefolder", "--data-dir", str(image_tree), *TINY, "-o", str(chart))
    error = capsys.readouterr().err
    assert status == 2 and f"cannot write {str(chart)!r}" in error and "is not a writable folder" in error
    assert "held-out accuracy" not in error  # refused before any training


def test_a_torchvision_dataset_is_scored_on_its_test_split(monkeypatch) -> None:
    """CIFAR-10 stand-in (no download): trained on the train split, scored on the test split, resized alike."""
    splits = {}

    class FakeCIFAR10:
        def __init__(self, root, train=True, download=False):
            count = 40 if train else 20
            rng = np.random.RandomState(int(train))
            self.data = (rng.rand(count, 32, 32, 3) * 255).astype(np.uint8)
            self.targets = [index % 10 for index in range(count)]
            self.classes = [f"class{label}" for label in range(10)]
            splits["train" if train else "test"] = root

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    evaluation = evaluate(
        [], "cifar10", data_dir="somewhere", epochs=1, seeds=1, baselines=["no-policy"], **{**TINY_API, "batch_size": 20}
    )
    assert sorted(splits) == ["test", "train"]
    assert (evaluation.setup["train_images"], evaluation.setup["test_images"]) == (40, 20)
    assert evaluation.setup["image_size"] == 16
