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
