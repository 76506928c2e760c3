"""bench/method_comparison.py: its argument handling, the commands it builds, its budget arithmetic (no searches run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def comparison(bench_script):
    return bench_script("method_comparison")


@pytest.fixture
def folder(tmp_path) -> Path:
    for part in ("train", "test"):
        (tmp_path / part).mkdir()
    return tmp_path


def test_variants_are_named_by_their_flags_or_explicitly(comparison) -> None:
    assert comparison.parse_variant("--method compact --objective adversarial") == comparison.Variant(
        "compact-adversarial", ("--method", "compact", "--objective", "adversarial")
    )
    assert comparison.parse_variant("paper=--method published --sampling per-sample").name == "paper"
    assert comparison.parse_variant("--method=compact --draws=8") == comparison.Variant(
        "compact-8", ("--method=compact", "--draws=8")
    )
    assert [comparison.parse_variant(text).name for text in comparison.DEFAULT_VARIANTS] == [
        "paper-per-batch", "paper-per-sample", "compact-unrolled", "compact-adversarial",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("compact", "must be NAME=FLAGS or FLAGS starting with --"),
        ("x=", "must be NAME=FLAGS"),
        ("--method compact --epochs 3", "sets --epochs, which this script sets itself"),
        ("--method compact --seed=1", "sets --seed"),
        ("Big=--method compact", "lowercase letters, digits and hyphens"),
    ],
)
def test_bad_variants_are_refused(comparison, text, message) -> None:
    with pytest.raises(ValueError, match=message):
        comparison.parse_variant(text)


def test_the_commands_share_the_training_settings(comparison, folder) -> None:
    args = comparison._parser().parse_args([str(folder), "--image-size", "32", "--lr", "0.05", "--no-flip", "--epochs", "40"])
    variant = comparison.parse_variant("--method compact --objective unrolled")
    search = comparison.search_command(args, variant, 7, folder / "out")
    shared = ["--model", "wrn-10-1", "--image-size", "32", "--batch-size", "32", "--lr", "0.05", "--cutout", "0", "--device", "cpu"]
    assert search == [
        "dada-search", "--dataset", "imagefolder", "--data-dir", str(folder / "train"), *shared,
        "--method", "compact", "--objective", "unrolled", "--epochs", "7", "--seed", "0", "--name", "compact-unrolled",
        "--output", str(folder / "out"), "--overwrite", "--no-progress",
    ]
    evaluate = comparison.evaluate_command(args, [folder / "out" / "a.json"], ["no-policy", "randaugment"], 40, 5, folder / "e.json")
    assert evaluate == [
        "dada-transforms", "evaluate", str(folder / "out" / "a.json"), "--dataset", "imagefolder",
        "--data-dir", str(folder / "train"), "--test-dir", str(folder / "test"), *shared, "--no-flip",
        "--epochs", "40", "--seeds", "5", "--baselines", "no-policy,randaugment", "--no-chart", "--no-progress",
        "--json", str(folder / "e.json"),
    ]


def test_the_budget_arithmetic(comparison) -> None:
    assert comparison.per_epoch((1, 5.0), (3, 9.0)) == 2.0  # start-up (3 s) cancels
    assert comparison.per_epoch((1, 7.2), (6, 7.0)) == pytest.approx(7.0 / 6)  # noise: bounded by the longer run
    assert comparison.affordable_epochs(10.0, 3.0) == 3
    assert comparison.affordable_epochs(1.0, 3.0) == 1
    with pytest.raises(ValueError, match="more epochs"):
        comparison.per_epoch((3, 5.0), (3, 9.0))


def test_margins_are_against_the_baseline_with_the_best_mean(comparison) -> None:
    entry = {"condition": "p", "baseline": "randaugment", "mean": 0.01, "interval": [0.0, 0.02], "verdict": "cannot tell"}
    record = {
        "conditions": [
            {"name": "p", "baseline": False, "mean": 0.9},
            {"name": "no-policy", "baseline": True, "mean": 0.8},
            {"name": "randaugment", "baseline": True, "mean": 0.85},
        ],
        "comparisons": [{"condition": "p", "baseline": "no-policy"}, entry],
    }
    assert comparison.margins(record, ["p"]) == ("randaugment", [entry])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--variant", "a=--method compact", "--variant", "a=--method published"], "variant names must be distinct"),
        (["--variant", "--method published"], "variant name 'published' is a baseline's: name the variant"),
        (["--baselines", "no-policy,nonesuch"], "--baselines must name some of"),
        (["--seeds", "1"], "at least 2"),
        (["--search-fraction", "0"], "--search-fraction must be in"),
        (["--search-epochs", "3,4"], "one positive number or one per variant (4)"),
        (["--search-epochs", "x"], "whole numbers"),
    ],
)
def test_bad_arguments_stop_with_one_line_and_status_2(comparison, folder, capsys, extra, message) -> None:
    with pytest.raises(SystemExit) as stop:
        comparison.main([str(folder), *extra])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_folder_without_train_and_test_is_refused(comparison, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        comparison.main([str(tmp_path)])
    assert stop.value.code == 2 and "has no train/ folder" in capsys.readouterr().err


def test_fixed_search_epochs_run_the_printed_commands_in_order(comparison, folder, monkeypatch, capsys) -> None:
    """With --search-epochs nothing is timed: one search per variant, then one evaluation of them all."""
    import json

    ran: list[list[str]] = []

    def fake_run(command: list[str]) -> float:
        ran.append(command)
        if command[1] == "evaluate":
            names = [Path(path).stem for path in command[2:4]]
            conditions = [{"name": n, "baseline": False, "mean": 0.9} for n in names]
            conditions.append({"name": "trivialaugment", "baseline": True, "mean": 0.8})
            comparisons = [{"condition": n, "baseline": "trivialaugment", "mean": 0.1, "interval": [0.05, 0.15], "verdict": "better"} for n in names]
            Path(command[command.index("--json") + 1]).write_text(json.dumps({"conditions": conditions, "comparisons": comparisons}))
        return 1.0

    monkeypatch.setattr(comparison, "run", fake_run)
    variants = ["--variant", "--method compact --draws 8", "--variant", "c=--method compact"]
    assert comparison.main([str(folder), *variants, "--search-epochs", "2,5", "--baselines", "trivialaugment"]) == 0
    assert [command[0] for command in ran] == ["dada-search", "dada-search", "dada-transforms"]
    assert [command[command.index("--epochs") + 1] for command in ran[:2]] == ["2", "5"]
    summary = json.loads((folder / "comparison" / "comparison.json").read_text())
    assert summary["best_baseline"] == "trivialaugment" and [s["epochs"] for s in summary["searches"]] == [2, 5]
    assert re.search(r"^  c +\+10\.00  \[\+5\.00, \+15\.00\]  better$", capsys.readouterr().out, re.MULTILINE)
