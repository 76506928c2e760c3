"""The published reduced ImageNet, drawn as the authors drew it, checked index for index against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from dada_transforms.search.data import REDUCED_SIZES, reduced_imagenet_classes
from dada_transforms.search.splits import reduced_class_subset

model_selection = pytest.importorskip("sklearn.model_selection")


def _imagenet_like_labels(seed: int) -> np.ndarray:
    """1,000 classes of 52 to 78 images each (about 65,000), sorted by class as torchvision's ImageNet lists them."""
    counts = np.random.RandomState(seed).randint(52, 79, 1000)
    return np.repeat(np.arange(1000), counts)


@pytest.mark.parametrize("seed", [0, 1])
def test_reduced_imagenet_is_drawn_over_all_classes_then_filtered(seed: int) -> None:
    labels = _imagenet_like_labels(seed)
    classes = reduced_imagenet_classes()
    size = REDUCED_SIZES["reduced-imagenet"]
    ours = reduced_class_subset(labels, size, classes, seed=0)

    # the authors' code: StratifiedShuffleSplit over the 1,000 classes, then keep the 120 in draw order
    splitter = model_selection.StratifiedShuffleSplit(n_splits=1, test_size=len(labels) - size, random_state=0)
    drawn, _ = next(splitter.split(np.zeros(len(labels)), labels))
    theirs = np.asarray([index for index in drawn if labels[index] in set(classes)])
    np.testing.assert_array_equal(ours, theirs)

    per_class = np.bincount(labels[ours], minlength=1000)[classes]
    expected = np.bincount(labels, minlength=1000)[classes] * size / len(labels)  # each class in proportion
    assert np.all(np.abs(per_class - expected) <= 1)
    assert 5700 <= len(ours) <= 6300  # ~6,000 images, not 50,000


def test_reduced_class_subset_needs_enough_images() -> None:
    with pytest.raises(ValueError, match="train_size"):
        reduced_class_subset(np.repeat(np.arange(10), 3), 30, [1, 2])
