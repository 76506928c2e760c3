"""A policy as a table: one row per operation, rendered as aligned text (``show``) or Markdown (model cards)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .ops import OPERATIONS
from .policy import Policy


_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # controls, format (bidi), surrogates, line breaks


def printable(text: str) -> str:
    """``text`` safe for a terminal: control and format characters (escape sequences, bidi overrides) escaped."""
    return "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) in _UNPRINTABLE else char
        for char in text
    )


@dataclass(frozen=True)
class OperationRow:
    """One operation of a policy, with its magnitude mapped to the real argument."""

    sub_policy: int  # 1-based
    first: bool  # the sub-policy's first operation
    weight: float | None  # the sub-policy's search weight, when the policy's metadata has it
    chance: float | None  # the sub-policy's sampling probability, when the policy is weighted (None: uniform)
    operation: str  # e.g. "Rotate +/-13.5 deg"
    probability: float
    magnitude: float


def sub_policy_weights(policy: Policy) -> list[float] | None:
    """The search weights softmax(alpha) of the sub-policies, if the metadata holds one number per sub-policy."""
    weights = policy.metadata.get("sub_policy_weights")
    if (
        isinstance(weights, list)
        and len(weights) == len(policy)
        and all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)
    ):
        return [float(w) for w in weights]
    return None


def policy_rows(policy: Policy) -> list[OperationRow]:
    """The policy's operations in order, one row each."""
    weights = sub_policy_weights(policy)
    chances = policy.sampling_probabilities
    return [
        OperationRow(
            sub_policy=index + 1,
            first=position == 0,
            weight=weights[index] if weights else None,
            chance=chances[index] if chances else None,
            operation=OPERATIONS[operation.op].describe(operation.magnitude),
            probability=operation.probability,
            magnitude=operation.magnitude,
        )
        for index, sub_policy in enumerate(policy)
        for position, operation in enumerate(sub_policy)
    ]


def _cells(row: OperationRow) -> list[str]:
    cells = [str(row.sub_policy) if row.first else ""]
    if row.weight is not None:
        cells.append(f"{row.weight:.4f}" if row.first else "")
    if row.chance is not None:
        cells.append(f"{row.chance:.4f}" if row.first else "")
    return cells + [row.operation, f"{row.probability:.2f}", f"{row.magnitude:.2f}"]


_NUMERIC_COLUMNS = frozenset({"sub-policy", "weight", "chosen with", "probability", "magnitude"})


def _header(row: OperationRow) -> list[str]:
    return (
        ["sub-policy"]
        + (["weight"] if row.weight is not None else [])
        + (["chosen with"] if row.chance is not None else [])
        + ["operation (argument)", "probability", "magnitude"]
    )


def text_table(policy: Policy) -> str:
    """The policy as an aligned plain-text table, sub-policies separated by their number."""
    rows = policy_rows(policy)
    header = _header(rows[0])
    body = [_cells(row) for row in rows]
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]
    rendered = ["  ".join(name.ljust(width) for name, width in zip(header, widths)).rstrip()]
    for line in body:
        cells = [
            cell.rjust(width) if name in _NUMERIC_COLUMNS else cell.ljust(width)
            for name, cell, width in zip(header, line, widths)
        ]
        rendered.append("  ".join(cells).rstrip())
    return "\n".join(rendered)


def markdown_table(policy: Policy) -> str:
    """The policy as a Markdown table."""
    rows = policy_rows(policy)
    header = _header(rows[0])
    alignment = ["---:" if name in _NUMERIC_COLUMNS else "---" for name in header]
    lines = [header, alignment] + [_cells(row) for row in rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


@dataclass(frozen=True)
class CompactRow:
    """One operation of a compact search's result (``dada-search --method compact``)."""

    operation: str  # its name
    weight: float | None  # softmax(logits): how often a slot draws it; None when the file does not say
    magnitude: float | None  # the searched magnitude m in [0, 1] (mirrored: the strength); None when no slot holds it
    argument: str  # the real argument at that magnitude, "" when unknown


def compact_rows(policy: Policy) -> tuple[float, list[CompactRow]]:
    """A compact result's one probability and its operations, heaviest first (unknown weights last).

    A compact result exports ordered N-tuples, each slot ``(op, p, m_op)`` and each tuple's
    weight ``prod w_op`` (metadata ``sub_policy_weights``): ``w_op`` is the N-th root of the
    weight of the tuple that repeats ``op``, when the file holds it (all tuples, the default).
    """
    weights = sub_policy_weights(policy)
    magnitudes: dict[str, float] = {}
    operation_weights: dict[str, float] = {}
    for index, sub_policy in enumerate(policy):
        for operation in sub_policy:
            mirrored = OPERATIONS[operation.op].mirror  # the file holds 0.5 + m / 2 for a mirrored operation
            magnitudes.setdefault(operation.op, 2 * operation.magnitude - 1 if mirrored else operation.magnitude)
        names = {operation.op for operation in sub_policy}
        if weights is not None and len(names) == 1:
            operation_weights[sub_policy[0].op] = weights[index] ** (1 / len(sub_policy))
    rows = [
        CompactRow(
            name, operation_weights.get(name), magnitudes.get(name),
            _describe(name, magnitudes[name]) if name in magnitudes else "",
        )
        for name in OPERATIONS
    ]
    rows.sort(key=lambda row: -1.0 if row.weight is None else -row.weight)  # stable: unknown ones in library order
    return policy[0][0].probability, rows


def _describe(name: str, magnitude: float) -> str:
    """``OPERATIONS[name].describe`` of the searched magnitude ``m`` (as the policy file stores it)."""
    return OPERATIONS[name].describe(0.5 + magnitude / 2 if OPERATIONS[name].mirror else magnitude)


def compact_text_table(policy: Policy) -> str:
    """A compact result as one line per operation: its weight, its magnitude m and the argument at m."""
    probability, rows = compact_rows(policy)
    header = ["operation", "weight", "magnitude m", "argument"]
    body = [
        [row.operation, "-" if row.weight is None else f"{row.weight:.4f}",
         "-" if row.magnitude is None else f"{row.magnitude:.2f}", row.argument]
        for row in rows
    ]
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]
    numeric = (False, True, True, False)
    lines = [
        "  ".join(cell.rjust(width) if right else cell.ljust(width) for cell, width, right in zip(line, widths, numeric)).rstrip()
        for line in [header, *body]
    ]
    return f"probability p (every slot): {probability:.2f}\n" + "\n".join(lines)
