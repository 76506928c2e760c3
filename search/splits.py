"""Stratified subsets, drawn exactly as scikit-learn's ``StratifiedShuffleSplit`` draws them.

The published reduced datasets were drawn with
``StratifiedShuffleSplit(n_splits=1, test_size=len(labels) - train_size,
random_state=0)`` and its first (train) part. This module reimplements that
algorithm (including ``_approximate_mode``'s tie breaking) on numpy's legacy
``RandomState`` so that the same indices come out, in the same order, without
depending on scikit-learn at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _approximate_mode(class_counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draw counts summing to ``draws``: floors, then the largest remainders (ties at random)."""
    continuous = class_counts / class_counts.sum() * draws
    floored = np.floor(continuous)
    missing = int(draws - floored.sum())
    if missing > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (candidates,) = np.where(remainder == value)
            add_now = min(len(candidates), missing)
            floored[rng.choice(candidates, size=add_now, replace=False)] += 1
            missing -= add_now
            if missing == 0:
                break
    return floored.astype(int)


def stratified_split(labels: Sequence[int] | np.ndarray, train_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into ``train_size`` and the rest, each class in proportion.

    Equal, index for index, to the first split of scikit-learn's
    ``StratifiedShuffleSplit(n_splits=1, train_size=train_size, random_state=seed)``
    (the same as ``test_size=len(labels) - train_size``).

    Raises:
        ValueError: if a class has fewer than 2 members, or either part would
            hold fewer indices than there are classes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    total = len(labels)
    if isinstance(train_size, bool) or not isinstance(train_size, (int, np.integer)) or not 0 < train_size < total:
        raise ValueError(f"train_size must be an integer in [1, {total - 1}] for {total} labels, got {train_size!r}")
    test_size = total - int(train_size)
    classes, class_of, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        lonely = classes[class_counts < 2].tolist()
        raise ValueError(f"every class needs at least 2 images for a stratified split; classes with one: {lonely}")
    for part, size in (("first", train_size), ("second", test_size)):
        if size < len(classes):
            raise ValueError(
                f"the {part} part of the split would hold {size} images, fewer than the {len(classes)} classes"
            )
    members = np.split(np.argsort(class_of, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(class_counts, int(train_size), rng)
    test_counts = _approximate_mode(class_counts - train_counts, test_size, rng)
    train: list[int] = []
    test: list[int] = []
    for index, count in enumerate(class_counts):
        shuffled = members[index].take(rng.permutation(count), mode="clip")
        train.extend(shuffled[: train_counts[index]])
        test.extend(shuffled[train_counts[index] : train_counts[index] + test_counts[index]])
    return rng.permutation(np.asarray(train, dtype=np.int64)), rng.permutation(np.asarray(test, dtype=np.int64))


def reduced_class_subset(
    labels: Sequence[int] | np.ndarray, size: int, kept_classes: Sequence[int], seed: int = 0
) -> np.ndarray:
    """Draw ``size`` indices stratified over *all* classes, then keep those of ``kept_classes`` (in draw order).

    This is how the published reduced ImageNet was drawn: 50,000 images of the
    1,000-class training set (``StratifiedShuffleSplit(test_size=len(labels) - 50000,
    random_state=0)``), of which the 120 listed classes keep about 6,000.
    """
    labels = np.asarray(labels)
    drawn, _ = stratified_split(labels, size, seed=seed)
    return drawn[np.isin(labels[drawn], np.asarray(kept_classes))]
