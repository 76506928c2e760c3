"""The noise floor's bands as a result records them, and the line that reports them (no torch needed).

A band is centred on the search's start (sub-policy weight 1/105, ``p`` 0.5,
``m`` 0.5); :mod:`.noise_floor` measures its half-widths.
"""

from __future__ import annotations

import math
from typing import Any

from dada_transforms.ops import OPERATION_NAMES

SUB_POLICY_COUNT = math.comb(len(OPERATION_NAMES), 2)
"""Every unordered pair of distinct operations: 105."""
BAND_START = {"weight": 1 / SUB_POLICY_COUNT, "probability": 0.5, "magnitude": 0.5}


def outside_counts(metadata: dict[str, Any]) -> dict[str, int] | None:
    """A result's ``outside_noise_floor`` metadata, or None when it has none or it is malformed."""
    counts = metadata.get("outside_noise_floor")
    valid = isinstance(counts, dict) and set(counts) == set(BAND_START) and all(
        isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in counts.values()
    )
    return counts if valid else None


def outside_line(counts: dict[str, int]) -> str:
    """The one line that says how many parameters left the noise floor's band."""
    total = SUB_POLICY_COUNT
    line = (
        f"outside the noise floor: {counts['weight']} of {total} sub-policy weights, "
        f"{counts['probability']} of {2 * total} probabilities, {counts['magnitude']} of {2 * total} magnitudes"
    )
    if not any(counts.values()):
        line += ": nothing moved further than a search whose objective says nothing about the draw"
    return line
