"""A known answer: when the validation images are the training images inverted, the search must find Invert.

Two classes of 8x8 images: bright left half (class 0) or bright right half
(class 1). The search-train images are upright, the search-val images
inverted, so an inverted class-0 image looks like an upright class-1 image:
only training on inverted images lowers the validation loss. The hypergradient
must therefore raise the weights and the probabilities of the sub-policies
that contain Invert above the rest; a sign error anywhere in the architecture
step lowers them instead.
"""

from __future__ import annotations

import torch

from dada_transforms.search import SUB_POLICIES, AugmentationParameters, BilevelSearchStep

BATCH = 32
STEPS = 40


def test_search_raises_invert_when_validation_images_are_inverted(half_bright_images):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    augmentation = AugmentationParameters()
    searcher = BilevelSearchStep(
        model, augmentation, lr=0.05, weight_decay=0.0, mean=(0.5,) * 3, std=(0.25,) * 3, cutout=0,
        sampling="per-sample", arch_lr=0.02, generator=torch.Generator().manual_seed(1),
    )
    train_images, train_labels = half_bright_images(BATCH * STEPS, seed=0)
    val_images, val_labels = half_bright_images(BATCH * STEPS, seed=1)
    val_images = 255 - val_images
    for start in range(0, BATCH * STEPS, BATCH):
        part = slice(start, start + BATCH)
        searcher.step(train_images[part], train_labels[part], val_images[part], val_labels[part])

    with_invert = torch.tensor(["Invert" in sub_policy for sub_policy in SUB_POLICIES])
    weights = augmentation.sub_policy_weights().detach()
    assert weights[with_invert].mean() > 1.4 * weights[~with_invert].mean(), weights
    top_five = weights.argsort(descending=True)[:5]
    assert with_invert[top_five].sum() >= 4, [SUB_POLICIES[index] for index in top_five]

    invert_slots = torch.tensor([[op == "Invert" for op in sub_policy] for sub_policy in SUB_POLICIES])
    probabilities = augmentation.probabilities.detach()
    assert probabilities[invert_slots].min() > 0.55, probabilities[invert_slots]
    assert probabilities[invert_slots].mean() > probabilities[~invert_slots].mean() + 0.2
