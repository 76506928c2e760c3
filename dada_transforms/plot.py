"""Charts, drawn with matplotlib (the optional ``plot`` extra): what a search learned, and an evaluation's scores.

``search_figure`` draws a search result's per-epoch history (the ``history.*``
tensors of ``PRESET.safetensors`` and the loss and accuracy of ``PRESET.json``):
the weights of the final top sub-policies over the epochs, the spread of the
probabilities and magnitudes against their 0.5 start (with the result's noise
band, ``metadata["noise_floor"]``, when it records one), and the loss and
accuracy. A result of the compact method (``--method compact``) draws its 15
operation weights, its one probability and its 15 magnitudes per epoch instead,
each against its start and noise band. ``evaluation_figure`` draws ``dada-transforms evaluate``'s paired
differences to no-policy, with their 95 % intervals, around a zero line.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .atomic import write_atomic
from .policy import Policy, _closest
from .policy_table import printable
from .presets import list_presets, preset_infos

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .search.evaluate import Evaluation

PLOT_EXTRA = "pip install 'dada-transforms[plot]'"
_SUB_POLICIES = 105
_MAX_EPOCHS = 100_000
NOISE_FLOOR_KEYS = ("weight", "probability", "magnitude")  # half-widths of the band around 1/105, 0.5 and 0.5


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
    weights: torch.Tensor  # [E, 105] softmax(alpha) at the end of each epoch (compact: [E, 15] operation weights)
    probabilities: torch.Tensor  # [E, 105, 2] (compact: [E, 1], its one probability)
    magnitudes: torch.Tensor  # [E, 105, 2] (compact: [E, 15], one per operation)
    noise_floor: dict[str, Any] | None = None  # metadata["noise_floor"]: weight, probability, magnitude half-widths, ...
    method: str = "published"  # the search method (metadata search.method), "published" or "compact"


def _result_files(spec: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ``.json`` and ``.safetensors`` of a search result given as a preset name or either file."""
    text = str(spec)
    for info in preset_infos():
        if info.name == text:
            if info.source == "built-in":
                raise ValueError(
                    f"{printable(text)!r} is a built-in preset, which has no search history to plot: RESULT must be "
                    f"a dada-search result (a user preset it wrote, or its PRESET.json or PRESET.safetensors)"
                )
            path = Path(info.location)
            break
    else:
        path = Path(spec).expanduser()
        if not path.exists() and path.suffix not in (".json", ".safetensors") and os.sep not in text:
            raise ValueError(
                f"no preset or file {printable(text)!r}{_closest(text, list_presets())}: RESULT must be a dada-search "
                f"result, a preset name or a PRESET.json or PRESET.safetensors written by dada-search"
            )
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

    from .files import read_paired_parameters

    policy_file, tensor_file = _result_files(spec)
    policy = Policy.from_json(policy_file)
    read_paired_parameters(policy.metadata, policy_file, tensor_file)
    history = policy.metadata.get("history")
    if not isinstance(history, list) or not history or len(history) > _MAX_EPOCHS:
        raise ValueError(f"{str(policy_file)!r} is not a dada-search result: its metadata has no per-epoch history")
    loss = [_finite_entry(entry, "loss", index, policy_file) for index, entry in enumerate(history)]
    accuracy = [_finite_entry(entry, "accuracy", index, policy_file) for index, entry in enumerate(history)]
    epochs = len(history)
    method = _search_method(policy.metadata, policy_file)
    shapes = {key: (epochs, *shape) for key, shape in _history_shapes(method).items()}
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
    weights, probabilities, magnitudes = (tensors[key] for key in shapes)
    return SearchHistory(
        policy.name or policy_file.stem, search, loss, accuracy, weights, probabilities, magnitudes,
        _noise_floor(policy.metadata.get("noise_floor"), policy_file), method,
    )


def _search_method(metadata: dict[str, Any], policy_file: Path) -> str:
    """The result's search method (metadata ``search.method``; absent: the published one)."""
    from .search.noise_band import result_method

    method = result_method(metadata)
    if method is None:
        search = metadata.get("search")
        named = search.get("method") if isinstance(search, dict) else None
        raise ValueError(
            f"{str(policy_file)!r} was searched by the method {printable(repr(named))[:80]}, which this version "
            f"cannot plot (it plots published and compact results)"
        )
    return method


def _history_shapes(method: str) -> dict[str, tuple[int, ...]]:
    """The keys and per-epoch shapes of ``method``'s ``history.*`` tensors, weights, probabilities, magnitudes in order."""
    if method == "compact":
        from .search.compact_step import CompactMethod

        return CompactMethod.history_shapes
    from .search.export import HISTORY_SHAPES

    return HISTORY_SHAPES


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _finite_entry(entry: Any, key: str, index: int, policy_file: Path) -> float:
    """History entry ``index``'s ``key``: a finite JSON number (not a string such as "nan", not true/false)."""
    value = entry.get(key) if isinstance(entry, dict) else None
    if not _is_number(value):
        raise ValueError(
            f"{str(policy_file)!r}: history entry {index + 1} has {key} {printable(repr(value))}; "
            f"every history entry's loss and accuracy must be a finite number"
        )
    return float(value)


def _noise_floor(record: Any, policy_file: Path) -> dict[str, Any] | None:
    """The result's noise band (None when it records none): non-negative finite half-widths, then optional steps and method."""
    if record is None:
        return None
    where = f"{str(policy_file)!r}: metadata noise_floor"
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be an object with {', '.join(NOISE_FLOOR_KEYS)}, got {printable(repr(record))[:80]}")
    for key in NOISE_FLOOR_KEYS:
        if not _is_number(record.get(key)) or record[key] < 0:
            raise ValueError(f"{where} {key} must be a finite number >= 0, got {printable(repr(record.get(key)))[:80]}")
    return record


def search_figure(history: SearchHistory, top: int = 8) -> Figure:
    """Four panels: the final top-``top`` sub-policies' weights, the spread of p and of m, loss and accuracy.

    A compact result: every operation's weight, the probability, every operation's magnitude,
    loss and accuracy (``top`` does not apply).
    """
    if history.method == "compact":
        return _compact_figure(history)
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
    band = history.noise_floor
    if band is not None:
        _noise_band(weights_axes, 1 / _SUB_POLICIES, band["weight"])
    outside = ""
    if band is not None:
        outside = f"\n({int(((final - 1 / _SUB_POLICIES).abs() > band['weight']).sum())} of 105 outside the noise band)"
    weights_axes.set(
        title=f"sub-policy weights: the final top {min(top, _SUB_POLICIES)}{outside}", xlabel="epoch", ylabel="softmax(alpha)"
    )
    weights_axes.legend(fontsize=7, loc="best")
    for axes, values, what, key in (
        (p_axes, history.probabilities, "probabilities p", "probability"),
        (m_axes, history.magnitudes, "magnitudes m", "magnitude"),
    ):
        _spread(axes, epochs, values.flatten(1), what, None if band is None else band[key])
        if band is not None:
            _noise_band(axes, 0.5, band[key])
    _loss_and_accuracy(loss_axes, epochs, history)
    _finish(figure, (weights_axes, loss_axes, p_axes, m_axes), history, f"sampling {history.search.get('sampling', '?')}")
    return figure


def _compact_figure(history: SearchHistory) -> Figure:
    """A compact result's four panels: the 15 operation weights, the probability, the 15 magnitudes, loss and accuracy."""
    from matplotlib.figure import Figure

    from .ops import OPERATION_NAMES
    from .search.noise_band import COMPACT_BAND_START

    epochs = list(range(1, len(history.loss) + 1))
    figure = Figure(figsize=(11, 8), layout="constrained")
    weights_axes, loss_axes, p_axes, m_axes = figure.subplots(2, 2).flatten()
    band = history.noise_floor
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors  # one colour per operation, the same in the weights and magnitudes panels
    for axes, values, key, what in (
        (weights_axes, history.weights, "weight", "operation weights softmax(logits)"),
        (p_axes, history.probabilities, "probability", "probability p (every slot)"),
        (m_axes, history.magnitudes, "magnitude", "operation magnitudes m (mirrored: strength)"),
    ):
        start = COMPACT_BAND_START[key]
        for index in range(values.shape[1]):
            label, colour = ("p", "tab:blue") if values.shape[1] == 1 else (OPERATION_NAMES[index], colours[index])
            axes.plot(epochs, values[:, index].tolist(), marker=".", color=colour, label=label, linewidth=1)
        axes.axhline(start, color="k", linestyle="--", linewidth=1, label=f"start ({start:.3g})")
        outside = ""
        if band is not None:
            _noise_band(axes, start, band[key])
            moved = int(((values[-1] - start).abs() > band[key]).sum())
            outside = f"\n({moved} of {values.shape[1]} outside the noise band)"
        axes.set(title=f"{what}{outside}", xlabel="epoch")
        axes.legend(fontsize=6, loc="best", ncol=3 if values.shape[1] > 1 else 1)
    _loss_and_accuracy(loss_axes, epochs, history)
    search = history.search
    _finish(figure, (weights_axes, loss_axes, p_axes, m_axes), history,
            f"compact: {search.get('operations', '?')} operations per image, {search.get('draws', '?')} draws")
    return figure


def _loss_and_accuracy(loss_axes: Any, epochs: list[int], history: SearchHistory) -> None:
    """The loss and (on a second axis) the accuracy of the augmented search-train batches per epoch."""
    loss_axes.plot(epochs, history.loss, marker=".", color="tab:red", label="loss")
    loss_axes.set(title="augmented search-train batches", xlabel="epoch", ylabel="loss")
    accuracy_axes = loss_axes.twinx()
    accuracy_axes.plot(epochs, history.accuracy, marker=".", color="tab:blue", label="accuracy")
    accuracy_axes.set_ylabel("accuracy")
    loss_axes.legend(handles=loss_axes.lines + accuracy_axes.lines, fontsize=8, loc="center right")


def _finish(figure: Figure, panels: tuple[Any, ...], history: SearchHistory, how: str) -> None:
    """Whole epochs on every x axis, and the title: the search's name, data, model, epochs, ``how`` and noise band."""
    from matplotlib.ticker import MaxNLocator

    for axes in panels:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    search = history.search
    figure.suptitle(
        f"{printable(history.name)}: dada-search on {search.get('dataset', '?')}, {search.get('model', '?')}, "
        f"{len(history.loss)} epochs, {how}"
        + ("" if history.noise_floor is None else f"\nnoise band (green): {_noise_band_source(history.noise_floor)}")
    )


def _noise_band(axes: Any, start: float, half_width: float) -> None:
    """The band ``start +/- half_width`` within which a search whose objective is noise leaves a parameter, shaded."""
    axes.axhspan(start - half_width, start + half_width, color="tab:green", alpha=0.2, zorder=0, label=f"noise band (+/-{half_width:.3g})")
    axes.legend(fontsize=7, loc="best")


def _noise_band_source(band: dict[str, Any]) -> str:
    """How the noise band was measured, from its optional ``method`` and ``steps``, for the figure's title."""
    method, steps = band.get("method"), band.get("steps")
    parts = [printable(method)[:100] if isinstance(method, str) else "", f"{steps} steps" if isinstance(steps, int) and not isinstance(steps, bool) else ""]
    return "; ".join(part for part in parts if part) or "as recorded"


def _spread(axes: Any, epochs: list[int], values: torch.Tensor, what: str, half_width: float | None = None) -> None:
    """Min-max, 10-90 % and median of ``values [E, V]`` per epoch, with the 0.5 start (and how many left the noise band)."""
    quantiles = torch.quantile(values, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]), dim=1)
    axes.fill_between(epochs, quantiles[0].tolist(), quantiles[4].tolist(), color="0.85", label="min-max")
    axes.fill_between(epochs, quantiles[1].tolist(), quantiles[3].tolist(), color="0.6", label="10-90 %")
    axes.plot(epochs, quantiles[2].tolist(), marker=".", color="k", label="median")
    axes.axhline(0.5, color="tab:red", linestyle="--", linewidth=1, label="start (0.5)")
    distances = (values[-1] - 0.5).abs()
    outside = "" if half_width is None else f"\n{int((distances > half_width).sum())} of 210 outside the noise band"
    axes.set(
        title=f"spread of the 210 {what}\n(at the end, max |value - 0.5| = {distances.max().item():.3f}){outside}",
        xlabel="epoch", ylim=(-0.02, 1.02),
    )
    axes.legend(fontsize=8, loc="lower left")


def evaluation_figure(evaluation: Evaluation) -> Figure:
    """Each condition's paired difference to no-policy (the reference): per-seed dots, the mean, its 95 % interval."""
    from matplotlib.figure import Figure

    differences = evaluation.differences_to_reference()
    figure = Figure(figsize=(max(5.0, 1.3 * len(differences) + 2), 4.5), layout="constrained")
    axes = figure.subplots()
    axes.axhline(0.0, color="k", linewidth=1)
    colours = {"better": "tab:green", "worse": "tab:red", "cannot tell": "tab:grey"}
    for position, difference in enumerate(differences):
        mean = 100 * difference.mean
        interval = difference.interval
        colour = colours[difference.verdict]
        if interval is not None:
            whiskers = [[mean - 100 * interval[0]], [100 * interval[1] - mean]]
            axes.errorbar([position], [mean], yerr=whiskers, fmt="none", ecolor=colour, elinewidth=2, capsize=6)
        axes.plot([position], [mean], "D", color=colour, markersize=7)
        axes.plot([position] * len(difference.differences), [100 * d for d in difference.differences], "k.", markersize=4)
    axes.set_xticks(range(len(differences)), [printable(d.condition) for d in differences], rotation=20, ha="right")
    axes.set_xlim(-0.6, max(len(differences), 1) - 0.4)
    seeds = len(evaluation.seeds)
    what = "mean and 95% paired t interval" if seeds > 1 else "one seed: no interval"
    axes.set_ylabel(f"minus {printable(evaluation.reference)} (accuracy points)\n{what}, dots: {seeds} seed(s)")
    setup = {key: printable(str(evaluation.setup.get(key, "?")))[:60] for key in ("model", "dataset", "epochs", "train_images", "test_images")}
    axes.set_title(
        f"{setup['model']} on {setup['dataset']}: {setup['epochs']} epochs, {setup['train_images']} training / "
        f"{setup['test_images']} held-out images\ngreen: better, red: worse, grey: cannot tell",
        fontsize=10,
    )
    return figure


def load_evaluation(spec: str | os.PathLike[str]) -> Evaluation | None:
    """The evaluation in ``spec`` when it is a JSON file that ``evaluate --json`` wrote; None for anything else.

    Raises:
        ValueError: for such a file that cannot be read or holds an invalid evaluation.
    """
    from .files import read_regular_file
    from .policy import MAX_POLICY_FILE_BYTES, parse_json
    from .search.evaluate import Evaluation

    path = Path(spec).expanduser()
    if path.suffix.lower() != ".json" or not path.is_file():
        return None
    try:
        record = parse_json(read_regular_file(path, MAX_POLICY_FILE_BYTES, "evaluation file"))
    except ValueError:
        return None  # not this kind of file: reading it as a search result says what is wrong
    if not isinstance(record, dict) or "comparisons" not in record or "sub_policies" in record:
        return None
    try:
        return Evaluation.from_dict(record)
    except ValueError as error:
        raise ValueError(f"{str(path)!r}: {error}") from None


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
