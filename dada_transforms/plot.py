"""Charts, drawn with matplotlib (the optional ``plot`` extra): what a search learned, and an evaluation's scores.

``search_figure`` draws a search result's per-epoch history (the ``history.*``
tensors of ``PRESET.safetensors`` and the loss and accuracy of ``PRESET.json``):
the weights of the final top sub-policies over the epochs, the spread of the
probabilities and magnitudes against their 0.5 start, and the loss and accuracy.
``evaluation_figure`` draws ``dada-transforms evaluate``'s accuracies as bars.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .atomic import write_atomic
from .policy import Policy
from .presets import preset_infos

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .search.evaluate import Evaluation

PLOT_EXTRA = "pip install 'dada-transforms[plot]'"
_SUB_POLICIES = 105
_MAX_EPOCHS = 100_000


def require_matplotlib() -> None:
    """Raise a ValueError naming the ``plot`` extra when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError(f"charts need matplotlib, which is not installed: {PLOT_EXTRA} (the 'plot' extra)") from None


@dataclass(frozen=True)
class SearchHistory:
    """A search's per-epoch record: ``E`` epochs."""

    name: str
    search: dict[str, Any]  # the search settings
    loss: list[float]  # [E], mean loss of the augmented search-train batches
    accuracy: list[float]  # [E]
    weights: torch.Tensor  # [E, 105] softmax(alpha) at the end of each epoch
    probabilities: torch.Tensor  # [E, 105, 2]
    magnitudes: torch.Tensor  # [E, 105, 2]


def _result_files(spec: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ``.json`` and ``.safetensors`` of a search result given as a preset name or either file."""
    for info in preset_infos():
        if info.name == str(spec):
            path = Path(info.location)
            break
    else:
        path = Path(spec).expanduser()
    policy_file, tensor_file = path.with_suffix(".json"), path.with_suffix(".safetensors")
    for file in (policy_file, tensor_file):
        if not file.is_file():
            raise ValueError(
                f"{str(file)!r} does not exist: RESULT must be a search result, a preset name or a PRESET.json "
                f"or PRESET.safetensors written by dada-search, with its sibling file"
            )
    return policy_file, tensor_file


def load_search_history(spec: str | os.PathLike[str]) -> SearchHistory:
    """The per-epoch history of the search result ``spec`` (a preset name, ``PRESET.json`` or ``PRESET.safetensors``).

    Raises:
        ValueError: when the files are missing, invalid, or hold no per-epoch history.
    """
    from safetensors import SafetensorError, safe_open

    policy_file, tensor_file = _result_files(spec)
    policy = Policy.from_json(policy_file)
    history = policy.metadata.get("history")
    if not isinstance(history, list) or not history or len(history) > _MAX_EPOCHS:
        raise ValueError(f"{str(policy_file)!r} is not a dada-search result: its metadata has no per-epoch history")
    try:
        loss = [float(entry["loss"]) for entry in history]
        accuracy = [float(entry["accuracy"]) for entry in history]
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{str(policy_file)!r}: every history entry must have a numeric loss and accuracy") from None
    epochs = len(history)
    shapes = {"sub_policy_weights": (epochs, _SUB_POLICIES), "probabilities": (epochs, _SUB_POLICIES, 2), "magnitudes": (epochs, _SUB_POLICIES, 2)}
    tensors = {}
    try:
        with safe_open(str(tensor_file), "pt") as handle:
            for key, shape in shapes.items():
                if f"history.{key}" not in handle.keys():
                    raise ValueError(
                        f"{str(tensor_file)!r} has no history.{key} tensor: the result was written before searches "
                        f"recorded their per-epoch parameters; search again to plot it"
                    )
                tensor = handle.get_tensor(f"history.{key}")
                if tuple(tensor.shape) != shape or not tensor.is_floating_point() or not torch.isfinite(tensor).all():
                    raise ValueError(
                        f"{str(tensor_file)!r}: history.{key} must be finite floats of shape {shape} "
                        f"({epochs} epochs in the JSON), got {tensor.dtype} {tuple(tensor.shape)}"
                    )
                tensors[key] = tensor.float()
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read {str(tensor_file)!r} as safetensors: {error}") from None
    search = policy.metadata.get("search") if isinstance(policy.metadata.get("search"), dict) else {}
    return SearchHistory(
        policy.name or policy_file.stem, search, loss, accuracy,
        tensors["sub_policy_weights"], tensors["probabilities"], tensors["magnitudes"],
    )


def search_figure(history: SearchHistory, top: int = 8) -> Figure:
    """Four panels: the final top-``top`` sub-policies' weights, the spread of p and of m, loss and accuracy."""
    from matplotlib.figure import Figure

    from .search.space import SUB_POLICIES

    epochs = list(range(1, len(history.loss) + 1))
    figure = Figure(figsize=(11, 8), layout="constrained")
    weights_axes, loss_axes, p_axes, m_axes = figure.subplots(2, 2).flatten()
    final = history.weights[-1]
    for index in torch.argsort(final, descending=True, stable=True)[:top].tolist():
        first, second = SUB_POLICIES[index]
        weights_axes.plot(epochs, history.weights[:, index].tolist(), marker=".", label=f"{first}+{second}")
    weights_axes.fill_between(
        epochs, history.weights.min(1).values.tolist(), history.weights.max(1).values.tolist(),
        color="0.85", label="all 105 (min-max)",
    )
    weights_axes.axhline(1 / _SUB_POLICIES, color="k", linestyle="--", linewidth=1, label="start (uniform 1/105)")
    weights_axes.set(title=f"sub-policy weights: the final top {min(top, _SUB_POLICIES)}", xlabel="epoch", ylabel="softmax(alpha)")
    weights_axes.legend(fontsize=7, loc="best")
    for axes, values, what in ((p_axes, history.probabilities, "probabilities p"), (m_axes, history.magnitudes, "magnitudes m")):
        _spread(axes, epochs, values.flatten(1), what)
    loss_axes.plot(epochs, history.loss, marker=".", color="tab:red", label="loss")
    loss_axes.set(title="augmented search-train batches", xlabel="epoch", ylabel="loss")
    accuracy_axes = loss_axes.twinx()
    accuracy_axes.plot(epochs, history.accuracy, marker=".", color="tab:blue", label="accuracy")
    accuracy_axes.set_ylabel("accuracy")
    loss_axes.legend(handles=loss_axes.lines + accuracy_axes.lines, fontsize=8, loc="center right")
    from matplotlib.ticker import MaxNLocator

    for axes in (weights_axes, loss_axes, p_axes, m_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    search = history.search
    figure.suptitle(
        f"{history.name}: dada-search on {search.get('dataset', '?')}, {search.get('model', '?')}, "
        f"{len(epochs)} epochs, sampling {search.get('sampling', '?')}"
    )
    return figure


def _spread(axes: Any, epochs: list[int], values: torch.Tensor, what: str) -> None:
    """Min-max, 10-90 % and median of ``values [E, V]`` per epoch, with the 0.5 start."""
    quantiles = torch.quantile(values, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]), dim=1)
    axes.fill_between(epochs, quantiles[0].tolist(), quantiles[4].tolist(), color="0.85", label="min-max")
    axes.fill_between(epochs, quantiles[1].tolist(), quantiles[3].tolist(), color="0.6", label="10-90 %")
    axes.plot(epochs, quantiles[2].tolist(), marker=".", color="k", label="median")
    axes.axhline(0.5, color="tab:red", linestyle="--", linewidth=1, label="start (0.5)")
    furthest = (values[-1] - 0.5).abs().max().item()
    axes.set(title=f"spread of the 210 {what}\n(at the end, max |value - 0.5| = {furthest:.3f})", xlabel="epoch", ylim=(-0.02, 1.02))
    axes.legend(fontsize=8, loc="lower left")


def evaluation_figure(evaluation: Evaluation) -> Figure:
    """Bars of each condition's mean held-out accuracy, +/- one standard deviation, with each seed's dot."""
    from matplotlib.figure import Figure

    conditions = evaluation.conditions
    figure = Figure(figsize=(max(5.0, 1.3 * len(conditions) + 2), 4.5), layout="constrained")
    axes = figure.subplots()
    positions = range(len(conditions))
    means = [100 * condition.mean for condition in conditions]
    axes.bar(positions, means, yerr=[100 * c.std for c in conditions], capsize=5, color="tab:blue", alpha=0.7)
    for position, condition in zip(positions, conditions):
        axes.plot([position] * len(condition.accuracies), [100 * a for a in condition.accuracies], "k.", markersize=5)
    low = min(100 * min(c.accuracies) for c in conditions)
    high = max(100 * max(c.accuracies) for c in conditions)
    margin = max(1.0, (high - low) * 0.5)
    axes.set_ylim(max(0.0, math.floor(low - margin)), min(100.0, math.ceil(high + margin)))
    axes.set_xticks(list(positions), [condition.name for condition in conditions], rotation=20, ha="right")
    setup = evaluation.setup
    axes.set_ylabel(f"held-out accuracy (%), mean +/- std of {len(evaluation.seeds)} seeds")
    axes.set_title(
        f"{setup['model']} on {setup['dataset']}: {setup['epochs']} epochs, "
        f"{setup['train_images']} training / {setup['test_images']} held-out images",
        fontsize=10,
    )
    return figure


def save_png(figure: Figure, output: str | os.PathLike[str]) -> Path:
    """Write ``figure`` to ``output`` (a .png) atomically.

    Raises:
        ValueError: for another suffix or an unwritable place (nothing is left behind).
    """
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise ValueError(f"the chart must be a .png file, got {str(output)!r}")
    try:
        write_atomic(output, lambda path: figure.savefig(path, format="png", dpi=110))
    except OSError as error:
        raise ValueError(f"cannot write {str(output)!r}: {error.strerror or error}") from None
    return output
