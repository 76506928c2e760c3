"""The noise floor's bands as a result records them, and the line that reports them (no torch needed).

A band is centred on the search's start: for the published method sub-policy
weight 1/105, ``p`` 0.5, ``m`` 0.5; for the compact method operation weight
1/15, ``p`` 0.5, ``m`` 0.5. :mod:`.noise_floor` and :mod:`.compact_floor`
measure its half-widths.
"""

from __future__ import annotations

import math
from typing import Any

from dada_transforms.ops import OPERATION_NAMES

SUB_POLICY_COUNT = math.comb(len(OPERATION_NAMES), 2)
"""Every unordered pair of distinct operations: 105."""
BAND_START = {"weight": 1 / SUB_POLICY_COUNT, "probability": 0.5, "magnitude": 0.5}
"""The published search's start, the centre of its bands."""
COMPACT_BAND_START = {"weight": 1 / len(OPERATION_NAMES), "probability": 0.5, "magnitude": 0.5}
"""The compact search's start, the centre of its bands."""
COUNTED = {
    "published": {"weight": (SUB_POLICY_COUNT, "sub-policy weights"), "probability": (2 * SUB_POLICY_COUNT, "probabilities"),
                  "magnitude": (2 * SUB_POLICY_COUNT, "magnitudes")},
    "compact": {"weight": (len(OPERATION_NAMES), "operation weights"), "probability": (1, "probability"),
                "magnitude": (len(OPERATION_NAMES), "magnitudes")},
}
"""Per method, how many parameters of each kind a band covers, and what they are called."""


def result_method(metadata: dict[str, Any]) -> str | None:
    """The search method of a result's metadata (``search.method``; absent: ``"published"``), None if unknown."""
    search = metadata.get("search")
    method = search.get("method", "published") if isinstance(search, dict) else "published"
    return method if isinstance(method, str) and method in COUNTED else None


def outside_counts(metadata: dict[str, Any]) -> dict[str, int] | None:
    """A result's ``outside_noise_floor`` metadata, or None when it has none or it is malformed for its method."""
    counts, method = metadata.get("outside_noise_floor"), result_method(metadata)
    valid = method is not None and isinstance(counts, dict) and set(counts) == set(BAND_START) and all(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= COUNTED[method][kind][0]
        for kind, value in counts.items()
    )
    return counts if valid else None


def outside_line(counts: dict[str, int], method: str = "published") -> str:
    """The one line that says how many of ``method``'s parameters left the noise floor's band."""
    line = "outside the noise floor: " + ", ".join(
        f"{counts[kind]} of {total} {noun}" for kind, (total, noun) in COUNTED[method].items()
    )
    if not any(counts.values()):
        line += ": nothing moved further than a search whose objective says nothing about the draw"
    return line
