"""A compact search's result (``dada-search --method compact``): its export defaults, ``show`` and ``plot``.

One tiny real compact search through the ``dada-search`` command on the CPU; the
learned values it is checked against are read back from its safetensors file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dada_transforms.cli import main
from dada_transforms.ops import OPERATION_NAMES
from dada_transforms.policy import Policy
from dada_transforms.search.cli import main as search_main
from dada_transforms.search.settings import SearchSettings, resolve_settings

HISTORY_KEYS = ("history.operation_weights", "history.probability", "history.operation_magnitudes")


@pytest.fixture(scope="module")
def compact_result(image_tree, tmp_path_factory):
    """The ``.json`` of a 2-epoch compact search with every export setting left at its default."""
    output = tmp_path_factory.mktemp("out")
    code = search_main([
        "--dataset", "imagefolder", "--data-dir", str(image_tree), "--name", "tiny", "--output", str(output),
        "--method", "compact", "--draws", "2", "--model", "wrn-10-1", "--image-size", "16", "--cutout", "8",
        "--epochs", "2", "--batch-size", "4", "--no-progress", "--device", "cpu",
    ])
    assert code == 0
    return output / "tiny.json"


def run_main(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exit:
        return exit.code


def test_compact_exports_its_whole_learned_distribution_by_default(compact_result) -> None:
    policy = Policy.from_json(compact_result)
    tensors = load_file(compact_result.with_suffix(".safetensors"))
    weights = tensors["logits"].double().softmax(0)
    assert len(policy) == 225 and policy.sampling_probabilities is not None
    expected = [(weights[a] * weights[b]).item() for a in range(15) for b in range(15)]  # itertools.product order
    assert list(policy.sampling_probabilities) == pytest.approx(expected, rel=1e-5)
    search = policy.metadata["search"]
    assert (search["top_k"], search["export"]) == (225, "weighted")  # the stored settings are the resolved values
    assert SearchSettings.from_dict(search) == resolve_settings(
        "imagefolder", model="wrn-10-1", image_size=16, cutout=8, epochs=2, batch_size=4, method="compact", draws=2
    )


def test_export_defaults_depend_on_the_method_and_explicit_values_win() -> None:
    published = resolve_settings("cifar10")
    assert (published.top_k, published.export) == (25, "top-k")
    assert published.to_dict() == resolve_settings("cifar10", top_k=25, export="top-k").to_dict()
    one = resolve_settings("cifar10", method="compact", operations=1)
    assert (one.top_k, one.export) == (15, "weighted")
    chosen = resolve_settings("cifar10", method="compact", top_k=10, export="top-k")
    assert (chosen.top_k, chosen.export) == (10, "top-k")
    old = resolve_settings("cifar10").to_dict()
    for key in ("export", "method", "draws", "operations", "objective"):  # a result written before these settings
        del old[key]
    assert SearchSettings.from_dict(old) == published


def test_search_help_names_the_export_defaults_per_method(capsys) -> None:
    with pytest.raises(SystemExit):
        search_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: 25 of the 105 for published; all 15^N N-tuples of operations for compact" in text
    assert "default for compact" in text


def test_show_of_a_compact_result_reports_its_parameters_without_torch(compact_result) -> None:
    script = (
        "import sys\n"
        "from dada_transforms.cli import main\n"
        f"code = main(['show', {str(compact_result)!r}])\n"
        "assert code in (0, None), code\n"
        "print('torch imported:', sorted(name for name in sys.modules if name == 'torch' or name.startswith('torch.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    assert shown.strip().endswith("torch imported: []")
    counts = json.loads(compact_result.read_text())["metadata"]["outside_noise_floor"]
    assert (
        f"Searched: outside the noise floor: {counts['weight']} of 15 operation weights, "
        f"{counts['probability']} of 1 probability, {counts['magnitude']} of 15 magnitudes"
    ) in shown
    tensors = load_file(compact_result.with_suffix(".safetensors"))
    weights = tensors["logits"].double().softmax(0)
    assert f"probability p (every slot): {tensors['probability'].item():.2f}" in shown
    for index, name in enumerate(OPERATION_NAMES):  # one row per operation: its weight and its magnitude m
        row = re.search(rf"^{name} +(\S+) +(\S+)", shown, re.MULTILINE)
        assert row is not None, name
        assert (row[1], row[2]) == (f"{weights[index].item():.4f}", f"{tensors['magnitudes'][index].item():.2f}")


def test_plot_draws_a_compact_result(compact_result, tmp_path) -> None:
    from dada_transforms.plot import load_search_history, search_figure

    tensors = load_file(compact_result.with_suffix(".safetensors"))
    assert {key: tuple(tensors[key].shape) for key in HISTORY_KEYS} == {
        "history.operation_weights": (2, 15), "history.probability": (2, 1), "history.operation_magnitudes": (2, 15)
    }
    torch.testing.assert_close(tensors["history.operation_weights"][-1], tensors["logits"].softmax(0), rtol=1e-5, atol=0)
    torch.testing.assert_close(tensors["history.operation_magnitudes"][-1], tensors["magnitudes"], rtol=1e-5, atol=1e-7)
    history_entries = json.loads(compact_result.read_text())["metadata"]["history"]
    assert not any(set(entry) & {"operation_weights", "probability", "operation_magnitudes"} for entry in history_entries)
    output = tmp_path / "compact.png"
    assert run_main("plot", str(compact_result), "-o", str(output)) == 0
    with Image.open(output) as picture:
        assert picture.format == "PNG"
    history = load_search_history(compact_result)
    figure = search_figure(history)
    weights_axes, _, p_axes, m_axes = figure.axes[:4]
    for axes in (weights_axes, m_axes):  # one labelled line per operation
        assert [line.get_label() for line in axes.lines if line.get_label() in OPERATION_NAMES] == list(OPERATION_NAMES)
    band = json.loads(compact_result.read_text())["metadata"]["noise_floor"]
    drawn = {
        axes: [(patch.get_y(), patch.get_y() + patch.get_height()) for patch in axes.patches
               if patch.get_label().startswith("noise band")]
        for axes in (weights_axes, p_axes, m_axes)
    }
    assert drawn[weights_axes] == [pytest.approx((1 / 15 - band["weight"], 1 / 15 + band["weight"]))]
    assert drawn[p_axes] == [pytest.approx((0.5 - band["probability"], 0.5 + band["probability"]))]
    assert drawn[m_axes] == [pytest.approx((0.5 - band["magnitude"], 0.5 + band["magnitude"]))]
    outside = json.loads(compact_result.read_text())["metadata"]["outside_noise_floor"]
    assert f"({outside['weight']} of 15 outside the noise band)" in weights_axes.get_title()
