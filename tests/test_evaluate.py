"""dada-transforms evaluate on a tiny image folder, on the CPU: the console script, a known answer, the errors."""

from __future__ import annotations

import json
import math
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
from dada_transforms.ops import OPERATION_NAMES, OPERATIONS
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
    assert "8 conditions x 2 seeds" in result.stderr and "no-policy, seed 1: held-out accuracy" in result.stderr
    scores = json.loads(report.read_text())
    baselines = ["no-policy", "initial", "random", "published", "randaugment", "autoaugment", "trivialaugment"]
    assert [condition["name"] for condition in scores["conditions"]] == ["cifar10", *baselines]
    assert [condition["baseline"] for condition in scores["conditions"]] == [False] + [True] * 7
    assert scores["seeds"] == [0, 1]

    # the held-out part is scikit-learn's stratified split of the folder
    labels = np.repeat(np.arange(3), 16)
    train, test = next(StratifiedShuffleSplit(1, train_size=36, random_state=0).split(np.zeros(48), labels))
    assert (scores["setup"]["train_images"], scores["setup"]["test_images"]) == (len(train), len(test)) == (36, 12)
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["condition", "mean"]
    accuracies = {}
    for row, condition in zip(lines[1:9], scores["conditions"]):
        accuracies[condition["name"]] = condition["accuracies"]
        assert len(condition["accuracies"]) == 2 and all(float(12 * a).is_integer() for a in condition["accuracies"])
        assert condition["mean"] == pytest.approx(np.mean(condition["accuracies"]))
        assert condition["std"] == pytest.approx(np.std(condition["accuracies"], ddof=1))
        name, mean, _, std, *runs = row.split()
        assert name == condition["name"]
        assert [float(mean), float(std)] == pytest.approx([100 * condition["mean"], 100 * condition["std"]], abs=0.006)
        assert [float(run) for run in runs] == pytest.approx([100 * a for a in condition["accuracies"]], abs=0.006)

    # the policy against every baseline, every other baseline against no-policy: paired by seed
    pairs = [(c["condition"], c["baseline"]) for c in scores["comparisons"]]
    assert pairs == [("cifar10", b) for b in baselines] + [(b, "no-policy") for b in baselines[1:]]
    assert scores["interval"]["level"] == 0.95 and scores["interval"]["t_quantile"] == pytest.approx(12.706, abs=1e-3)
    for comparison in scores["comparisons"]:
        differences = np.subtract(accuracies[comparison["condition"]], accuracies[comparison["baseline"]])
        assert comparison["differences"] == pytest.approx(differences.tolist())
        assert comparison["mean"] == pytest.approx(differences.mean())
        half = 12.706 * np.std(differences, ddof=1) / np.sqrt(2)
        assert comparison["interval"] == pytest.approx([differences.mean() - half, differences.mean() + half], abs=1e-4)
        assert comparison["verdict"] in ("better", "worse", "cannot tell")
    heading = lines.index(next(line for line in lines if line.startswith("paired differences")))
    assert "95% interval: paired t over 2 seeds (df 1, t = 12.706)" in lines[heading]
    assert lines[heading + 1].split()[:4] == ["condition", "minus", "mean", "95%"]
    for row, comparison in zip(lines[heading + 2 :], scores["comparisons"]):
        assert row.split()[:3] == [comparison["condition"], comparison["baseline"], f"{100 * comparison['mean']:+.2f}"]
        assert comparison["verdict"] in row
    assert f"wrote {chart}" in result.stdout and f"wrote {report}" in result.stdout
    with Image.open(chart) as picture:
        assert picture.format == "PNG" and picture.width > 400 and picture.height > 300
    assert sorted(path.name for path in chart.parent.iterdir()) == ["chart.png", "scores.json"]  # no temporary files


def test_one_seed_gives_no_interval_and_says_why(image_tree, tmp_path, capsys) -> None:
    report = tmp_path / "scores.json"
    status = run_main(
        "evaluate", "--dataset", "imagefolder", "--data-dir", str(image_tree), "--holdout", "0.25", "--epochs", "1",
        "--seeds", "1", "--baselines", "no-policy,initial", "--no-chart", "--no-progress", "--json", str(report), *TINY,
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "+/-" not in out  # was "+/- 0.00": a spread of one run
    assert "one seed: no interval and no verdict (a paired t interval needs at least 2 seeds" in out
    scores = json.loads(report.read_text())
    assert [condition["std"] for condition in scores["conditions"]] == [None, None]
    assert scores["interval"]["t_quantile"] is None and "one seed" in scores["interval"]["note"]
    [comparison] = scores["comparisons"]
    assert comparison["interval"] is None and comparison["verdict"] == "cannot tell"


def test_a_seed_gives_the_same_no_policy_run_whatever_else_is_evaluated(image_tree) -> None:
    """The shared parts of a seed (network, order, crops, flips, Cutout) do not depend on the other conditions."""
    options = {"data_dir": image_tree, "holdout": 0.25, "epochs": 2, "seeds": 2, **TINY_API}
    alone = evaluate([], "imagefolder", baselines=["no-policy"], **options)
    among = evaluate(
        [Policy.from_list([[("Rotate", 1.0, 0.9)]], name="rotate")], "imagefolder",
        baselines=["trivialaugment", "initial", "no-policy"], **options,
    )
    scores = {condition.name: condition.accuracies for condition in among.conditions}
    assert scores["no-policy"] == alone.conditions[0].accuracies


def test_a_diverging_run_stops_with_the_condition_seed_and_setting(image_tree, tmp_path, capsys) -> None:
    """--lr 1e30 made every prediction class 0 and printed an accuracy; now the run's NaN is an error."""
    status = run_main(
        "evaluate", "--dataset", "imagefolder", "--data-dir", str(image_tree), "--holdout", "0.25", "--epochs", "1",
        "--seeds", "1", "--baselines", "no-policy", "--lr", "1e30", "--no-chart", "--no-progress", *TINY,
    )
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    error = captured.err
    assert error.startswith("dada-transforms: error: the no-policy run of seed 0 diverged: ") and error.count("\n") == 1
    assert "non-finite" in error or "nan" in error or "inf" in error
    assert "lower --lr (now 1e+30)" in error


def test_compact_initial_is_the_compact_search_start_and_only_evaluated_when_named(image_tree) -> None:
    from itertools import product

    from dada_transforms import DADA
    from dada_transforms.search.evaluate import compact_initial_policy

    policy = compact_initial_policy()
    pairs = [tuple(operation.op for operation in sub_policy) for sub_policy in policy]
    assert pairs == list(product(OPERATION_NAMES, repeat=2))  # every ordered pair, repeats included
    assert len(set(policy.sampling_probabilities)) == 1  # all equally likely
    for operation in (o for sub_policy in policy for o in sub_policy):
        assert operation.probability == 0.5
        assert operation.magnitude == (0.75 if OPERATIONS[operation.op].mirror else 0.5)  # mirrored: half strength
    assert DADA(policy).policy.sampling_probabilities == policy.sampling_probabilities
    options = {"data_dir": image_tree, "holdout": 0.25, "epochs": 1, "seeds": 1, **TINY_API}
    assert "compact-initial" not in {c.name for c in evaluate([], "imagefolder", baselines=["no-policy"], **options).conditions}
    named = evaluate([], "imagefolder", baselines=["no-policy", "compact-initial"], **options)
    assert [condition.name for condition in named.conditions] == ["no-policy", "compact-initial"]
    assert named.to_dict()["conditions"][1]["baseline"] is True


def test_initial_is_the_search_start_and_published_the_closest_preset() -> None:
    from itertools import combinations

    from dada_transforms.presets import load_policy
    from dada_transforms.search.evaluate import initial_policy, published_preset

    policy = initial_policy()
    assert len(policy) == 105 == math.comb(15, 2)
    pairs = [tuple(operation.op for operation in sub_policy) for sub_policy in policy]
    assert pairs == list(combinations(OPERATION_NAMES, 2))  # every unordered pair of distinct operations once
    assert {(o.probability, o.magnitude) for sub_policy in policy for o in sub_policy} == {(0.5, 0.5)}
    assert "sub_policy_weights" not in policy.metadata  # chosen uniformly
    expected = {
        "cifar10": "cifar10", "reduced-cifar10": "cifar10", "imagefolder": "cifar10", "cifar100": "cifar100",
        "reduced-cifar100": "cifar100", "svhn": "svhn", "reduced-svhn": "svhn", "imagenet": "imagenet",
        "reduced-imagenet": "imagenet",
    }
    assert {dataset: published_preset(dataset) for dataset in expected} == expected
    assert len(load_policy(published_preset("svhn"))) > 0


def test_torchvision_baselines_draw_per_image_on_the_host_like_torchvision() -> None:
    """Each uint8 image goes through the transform on the CPU on its own: torchvision's bytes, image by image."""
    from torchvision.transforms import v2

    from dada_transforms.search.evaluate import per_image_on_host

    images = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    seen = []

    def recording(image):
        seen.append((image.device.type, image.dtype, tuple(image.shape)))
        return image

    assert torch.equal(per_image_on_host(recording, images), images)
    assert seen == [("cpu", torch.uint8, (3, 12, 12))] * 6

    transform = v2.TrivialAugmentWide()
    torch.manual_seed(3)
    reference = torch.stack([transform(image) for image in images])
    torch.manual_seed(3)
    augmented = per_image_on_host(transform, images)
    assert augmented.dtype == torch.uint8 and augmented.device == images.device
    assert torch.equal(augmented, reference)
    same = images[:1].expand(6, -1, -1, -1)
    torch.manual_seed(5)
    outputs = per_image_on_host(transform, same)
    assert len({bytes(output.flatten().numpy()) for output in outputs}) > 1  # a draw per image, not one per batch


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
        (["--baselines", "no-policy,cutmix"], "unknown baseline 'cutmix'; baselines are no-policy, initial, random, published, randaugment"),
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


def test_a_bad_test_dir_or_data_dir_is_named_as_what_it_is(image_tree, tmp_path, capsys) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cases = [
        (["--data-dir", str(image_tree), "--test-dir", str(tmp_path / "missing")], "'--test-dir'", "does not exist; pass --test-dir"),
        (["--data-dir", str(loop)], "'--data-dir'", "cannot be read (Too many levels of symbolic links); pass --data-dir"),
        (["--data-dir", str(image_tree), "--test-dir", str(loop)], "'--test-dir'", "Too many levels of symbolic links); pass --test-dir"),
    ]
    for args, option, message in cases:
        assert run_main("evaluate", "--dataset", "imagefolder", *args, "--no-chart", *TINY) == 2, option
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, (option, error)


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
