"""The published method's output pinned on a fixed small problem: a refactor of the search changes no number.

The constants were recorded from the code before the loop/method split (issue 18), on x86 CPU
with one thread. Each learned tensor is pinned by its change from the start value: the sum, a
fixed cosine-weighted projection and the largest absolute change (a changed draw, gradient or
step order moves them far beyond the tolerance, which only absorbs float rounding across machines).
"""

from __future__ import annotations

import pytest
import torch

from dada_transforms.search.loop import search

START = {"alpha": 1e-3, "probabilities": 0.5, "magnitudes": 0.5}  # AugmentationParameters' initial values

PINNED = {
    "per-batch": {
        "alpha": (-0.790022, 0.0268894, 0.0225366),
        "probabilities": (-0.024956, 0.0296203, 0.00983265),
        "magnitudes": (0.0096963, 0.0182762, 0.00983262),
        "loss": (1.17121, 1.02668),
        "accuracy": (0.25, 0.416667),
    },
    "per-sample": {
        "alpha": (-1.37907, 0.00261624, 0.0227552),
        "probabilities": (0.0300785, -0.0169912, 0.0181259),
        "magnitudes": (0.0107361, 0.0840677, 0.00983262),
        "loss": (1.20266, 1.06187),
        "accuracy": (0.25, 0.333333),
    },
}


def _change_summary(tensor: torch.Tensor, start: float) -> tuple[float, float, float]:
    """Sum, cosine-weighted projection and largest absolute value of ``tensor - start``."""
    change = (tensor.double() - start).flatten()
    weights = torch.cos(0.7 * torch.arange(len(change), dtype=torch.float64) + 0.3)
    return change.sum().item(), (change * weights).sum().item(), change.abs().max().item()


@pytest.mark.parametrize("sampling", ["per-batch", "per-sample"])
def test_the_published_search_gives_the_pinned_result(image_tree, tmp_path, sampling) -> None:
    result = search(
        "imagefolder", name="pinned", output=tmp_path, data_dir=image_tree, model="wrn-10-1", image_size=16,
        cutout=8, batch_size=4, epochs=2, device="cpu", progress=False, sampling=sampling,
    )
    pinned = PINNED[sampling]
    for key, start in START.items():
        assert _change_summary(result.parameters[key], start) == pytest.approx(pinned[key], rel=1e-4, abs=1e-6), key
    history = result.policy.metadata["history"]
    assert [entry["loss"] for entry in history] == pytest.approx(pinned["loss"], rel=1e-4, abs=1e-6)
    assert [entry["accuracy"] for entry in history] == pytest.approx(pinned["accuracy"], rel=1e-4, abs=1e-6)
