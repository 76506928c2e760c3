"""End-to-end examples: DADA in a v2 detection pipeline and a segmentation pipeline, one training step each."""

from __future__ import annotations

import random

import torch
from PIL import Image, ImageOps
from torchvision import tv_tensors
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large
from torchvision.transforms import v2

from dada_transforms import DADA
from dada_transforms.grid import demo_image

SIZE = 64


def _photo_set(count: int) -> list[tuple[Image.Image, dict]]:
    """Photos with one or two pasted cat faces each, their boxes, labels and instance masks."""
    photo = demo_image()
    face = photo.crop((100, 20, 300, 230))
    background = ImageOps.mirror(photo).resize((SIZE, SIZE))
    rng = random.Random(0)
    samples = []
    for _ in range(count):
        image = background.copy()
        boxes, masks = [], []
        for _ in range(rng.randint(1, 2)):
            side = rng.randint(16, 28)
            x, y = rng.randint(0, SIZE - side), rng.randint(0, SIZE - side)
            image.paste(face.resize((side, side)), (x, y))
            boxes.append([x, y, x + side, y + side])
            mask = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
            mask[y : y + side, x : x + side] = 1
            masks.append(mask)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(SIZE, SIZE)),
            "masks": tv_tensors.Mask(torch.stack(masks)),
            "labels": torch.ones(len(boxes), dtype=torch.int64),
            "image_id": len(samples),
        }
        samples.append((image, target))
    return samples


def test_detection_training_step():
    torch.manual_seed(0)
    pipeline = v2.Compose(
        [v2.ToImage(), DADA("imagenet"), v2.SanitizeBoundingBoxes(), v2.ToDtype(torch.float32, scale=True)]
    )
    originals = _photo_set(4)
    augmented = [pipeline(image, target) for image, target in originals]
    moved = [
        target["boxes"].shape != original["boxes"].shape or not torch.equal(target["boxes"], original["boxes"])
        for (_, target), (_, original) in zip(augmented, originals)
    ]
    assert any(moved)  # some draws moved the boxes
    model = fasterrcnn_mobilenet_v3_large_fpn(  # few proposals and sampled regions: a fast CPU step
        weights=None, weights_backbone=None, num_classes=2, min_size=SIZE, max_size=SIZE,
        rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_batch_size_per_image=64,
        box_batch_size_per_image=16,
    )
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = [image for image, _ in augmented]
    targets = [{"boxes": target["boxes"], "labels": target["labels"]} for _, target in augmented]
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()


def test_segmentation_training_step():
    torch.manual_seed(0)
    ignore = 255
    pipeline = v2.Compose([
        v2.ToImage(),
        DADA("imagenet", fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore}),
        v2.ToDtype(torch.float32, scale=True),
    ])
    samples = []
    for image, target in _photo_set(2):
        semantic = tv_tensors.Mask(target["masks"].amax(0))  # one class map: 1 = cat face
        image, semantic = pipeline(image, semantic)
        samples.append((image, semantic))
    images = torch.stack([image for image, _ in samples])
    labels = torch.stack([semantic for _, semantic in samples]).long()
    assert set(labels.unique().tolist()) <= {0, 1, ignore}
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2, aux_loss=False)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = torch.nn.functional.cross_entropy(model(images)["out"], labels, ignore_index=ignore)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
