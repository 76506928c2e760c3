"""DADA as a torchvision v2 transform: whole samples, targets moved with the image, videos, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from dada_transforms import DADA

HEIGHT, WIDTH = 48, 64
RECTANGLE = (14, 10, 46, 30)  # x0, y0, x1, y1 (half-open), white
DOT = (22, 16)  # a 2x2 red square with its centre at (23, 17)
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")


def _scene() -> tv_tensors.Image:
    image = torch.zeros(3, HEIGHT, WIDTH, dtype=torch.uint8)
    x0, y0, x1, y1 = RECTANGLE
    image[:, y0:y1, x0:x1] = 255
    image[1:, DOT[1] : DOT[1] + 2, DOT[0] : DOT[0] + 2] = 0  # red: (255, 0, 0)
    return tv_tensors.Image(image)


def _targets(box_format: str = "XYXY") -> dict:
    xyxy = tv_tensors.BoundingBoxes([RECTANGLE], format="XYXY", canvas_size=(HEIGHT, WIDTH))
    x0, y0, x1, y1 = RECTANGLE
    mask = torch.zeros(1, HEIGHT, WIDTH, dtype=torch.uint8)
    mask[:, y0:y1, x0:x1] = 1
    return {
        "boxes": F.convert_bounding_box_format(xyxy, new_format=box_format),
        "masks": tv_tensors.Mask(mask),
        "keypoints": tv_tensors.KeyPoints([[DOT[0] + 1.0, DOT[1] + 1.0]], canvas_size=(HEIGHT, WIDTH)),
        "labels": torch.tensor([3]),
        "name": "scene-1",
    }


def _seeded_with_sign(transform: DADA, negative: bool) -> torch.Generator:
    """A generator whose next draw gives the policy's (single) operation the wanted sign."""
    for seed in range(100):
        generator = torch.Generator().manual_seed(seed)
        transform.generator = generator
        drawn = transform.draw_params(1)
        if bool(drawn.applied[0, 0]) and (float(drawn.arguments[0, 0]) < 0) == negative:
            return generator.manual_seed(seed)
    raise AssertionError("no seed gives the wanted sign")


@pytest.mark.parametrize("operation", GEOMETRIC)
@pytest.mark.parametrize("magnitude", [0.15, 0.6, 1.0])
@pytest.mark.parametrize("negative", [False, True])
def test_targets_follow_the_pixels(operation, magnitude, negative):
    transform = DADA([[(operation, 1.0, magnitude)]])
    transform.generator = _seeded_with_sign(transform, negative)
    image, target = transform(_scene(), _targets())
    white = (image == 255).all(0)
    red = (image[0] == 255) & (image[1] == 0)
    covered = white | red

    # the mask is where the rectangle's pixels went (nearest resampling; ties may round apart)
    assert int((target["masks"][0].bool() != covered).sum()) <= 3
    # the box is the rectangle's moved corners' extent, clamped to the canvas: it holds the pixels
    ys, xs = covered.nonzero().unbind(1)
    pixel_box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    assert torch.allclose(target["boxes"][0].float(), pixel_box, atol=1.5), (target["boxes"], pixel_box)
    # the keypoint stays on the red dot
    ys, xs = red.nonzero().unbind(1)
    if len(xs):
        centre = torch.stack([xs.float().mean() + 0.5, ys.float().mean() + 0.5])
        assert torch.allclose(target["keypoints"][0], centre, atol=1.0), (target["keypoints"], centre)
    assert torch.equal(target["labels"], torch.tensor([3])) and target["name"] == "scene-1"


@pytest.mark.parametrize("box_format", ["XYWH", "CXCYWH"])
def test_every_box_format_moves_alike(box_format):
    policy = [[("Rotate", 1.0, 0.9), ("ShearX", 1.0, 0.1)]]
    _, reference = DADA(policy, generator=torch.Generator().manual_seed(4))(_scene(), _targets())
    _, moved = DADA(policy, generator=torch.Generator().manual_seed(4))(_scene(), _targets(box_format))
    assert moved["boxes"].format == tv_tensors.BoundingBoxFormat[box_format]
    as_xyxy = F.convert_bounding_box_format(moved["boxes"], new_format="XYXY")
    assert torch.allclose(as_xyxy.float(), reference["boxes"].float(), atol=1)


def test_targets_match_torchvision_affine():
    # Rotate by +/-30 degrees about the centre is torchvision's affine with angle -/+30 (clockwise).
    transform = DADA([[("Rotate", 1.0, 1.0)]], generator=torch.Generator().manual_seed(0))
    degrees = float(transform.draw_params(1).arguments[0, 0])
    transform.generator.manual_seed(0)
    _, moved = transform(_scene(), _targets())
    for key in ("boxes", "masks", "keypoints"):
        expected = F.affine(_targets()[key], angle=-degrees, translate=[0, 0], scale=1.0, shear=[0, 0])
        assert torch.equal(moved[key], expected), key


def test_colour_operations_and_cutout_leave_targets_alone():
    policy = [[("Invert", 1.0, 0.0), ("Cutout", 1.0, 1.0), ("Solarize", 1.0, 0.2)]]
    image, target = DADA(policy)(_scene(), _targets())
    assert not torch.equal(image, _scene())
    for key, value in _targets().items():
        assert torch.equal(target[key], value) if isinstance(value, torch.Tensor) else target[key] == value


@pytest.mark.parametrize("make", [tuple, list, lambda items: {"image": items[0], "target": items[1]}])
def test_samples_pass_everything_else_through(make, photo):
    label = torch.tensor(7)
    sample = make((photo, {"label": label, "names": ["a", "b"], "nested": {"count": 2, "scores": torch.ones(3)}}))
    pipeline = v2.Compose([v2.ToImage(), DADA("imagenet", generator=torch.Generator().manual_seed(1))])
    out = pipeline(sample)
    image, target = (out["image"], out["target"]) if isinstance(out, dict) else out
    alone = v2.ToImage()(DADA("imagenet", generator=torch.Generator().manual_seed(1))(photo))
    assert isinstance(image, tv_tensors.Image) and torch.equal(image, alone)
    assert target["label"] is label and target["names"] == ["a", "b"] and target["nested"]["count"] == 2
    assert torch.equal(target["nested"]["scores"], torch.ones(3))


def test_image_and_label_keep_plain_results(photo):
    assert isinstance(DADA("svhn"), v2.Transform)
    image = torch.from_numpy(np.array(photo)).permute(2, 0, 1).contiguous()
    alone = DADA("svhn", generator=torch.Generator().manual_seed(2))(image)
    augmented, label = DADA("svhn", generator=torch.Generator().manual_seed(2))(image, 5)
    assert torch.equal(augmented, alone) and label == 5
    label = torch.tensor([5, 6])  # a plain tensor after the image is not an image: it passes through
    augmented, same_label = DADA("svhn", generator=torch.Generator().manual_seed(2))(image, label)
    assert torch.equal(augmented, alone) and same_label is label
    pil, label = DADA("svhn", generator=torch.Generator().manual_seed(2))(photo, 5)
    assert torch.equal(torch.from_numpy(np.array(pil)).permute(2, 0, 1), alone)


def test_a_pil_image_with_targets_moves_them_alike():
    scene = F.to_pil_image(_scene())
    policy = [[("ShearY", 1.0, 0.8), ("TranslateX", 1.0, 0.9)]]
    pil, from_pil = DADA(policy, generator=torch.Generator().manual_seed(6))(scene, _targets())
    tensor, from_tensor = DADA(policy, generator=torch.Generator().manual_seed(6))(_scene(), _targets())
    assert torch.equal(F.pil_to_tensor(pil), tensor)
    for key in ("boxes", "masks", "keypoints"):
        assert torch.equal(from_pil[key], from_tensor[key])


def test_mask_fill_per_type():
    policy = [[("TranslateX", 1.0, 1.0)]]
    image, target = DADA(policy, fill={tv_tensors.Image: 128, tv_tensors.Mask: 255})(_scene(), _targets())
    uncovered = (image == 128).all(0)
    assert uncovered.any() and bool((target["masks"][0][uncovered] == 255).all())
    image, target = DADA(policy, fill=128)(_scene(), _targets())
    assert bool((target["masks"][0][(image == 128).all(0)] == 0).all())  # a plain fill is the images' only
    with pytest.raises(ValueError, match="fill keys must be .* got 'masks'"):
        DADA(policy, fill={"masks": 1})
    with pytest.raises(ValueError, match=r"the fill of masks must be one number \(a label\), got \(1, 2, 3\)"):
        DADA(policy, fill={tv_tensors.Mask: (1, 2, 3)})


def test_batched_affine_matrices_move_points_as_the_pixels():
    policy = [
        [("Rotate", 0.8, 0.9), ("ShearX", 0.8, 0.2)],
        [("TranslateY", 0.9, 0.3), ("Rotate", 0.7, 1.0)],
        [("ShearY", 0.9, 0.1), ("TranslateX", 0.9, 0.6)],
    ]
    transform = DADA(policy, generator=torch.Generator().manual_seed(3))
    images = _scene().as_subclass(torch.Tensor).expand(24, -1, -1, -1)
    drawn = transform.draw_params(24)
    augmented = transform.apply_batch(images, drawn)
    matrices = transform.affine_matrices(drawn, HEIGHT, WIDTH)
    assert matrices.shape == (24, 2, 3) and matrices.dtype == torch.float64
    dot = torch.tensor([DOT[0] + 1.0, DOT[1] + 1.0, 1.0], dtype=torch.float64)
    x0, y0, x1, y1 = RECTANGLE
    corners = torch.tensor([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], dtype=torch.float64)
    checked = 0
    for image, matrix in zip(augmented, matrices):
        red = (image[0] == 255) & (image[1] == 0)
        ys, xs = red.nonzero().unbind(1)
        if len(xs) == 4:  # the whole dot is on the canvas
            checked += 1
            centre = torch.stack([xs.double().mean() + 0.5, ys.double().mean() + 0.5])
            assert torch.allclose(matrix @ dot, centre, atol=1.0)
        moved = corners @ matrix.T
        extent = torch.cat([moved.amin(0), moved.amax(0)]).clamp(min=0)
        extent = torch.minimum(extent, torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT], dtype=torch.float64))
        ys, xs = ((image == 255).all(0) | red).nonzero().unbind(1)
        pixels = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).double()
        assert torch.allclose(extent, pixels, atol=1.5), (extent, pixels)
    assert checked >= 10 and not torch.equal(matrices[0], matrices[1])


def test_batched_matrices_agree_with_the_per_sample_path():
    transform = DADA("imagenet", generator=torch.Generator().manual_seed(8))
    for _ in range(10):
        state = transform.generator.get_state()
        matrix = transform.affine_matrices(transform.draw_params(1), HEIGHT, WIDTH)[0]
        transform.generator.set_state(state)
        _, target = transform(_scene(), _targets())
        point = matrix @ torch.tensor([DOT[0] + 1.0, DOT[1] + 1.0, 1.0], dtype=torch.float64)
        assert torch.allclose(target["keypoints"][0].double(), point, atol=1e-3)


def test_videos_draw_once_per_clip_plain_batches_per_image():
    frames = _scene().as_subclass(torch.Tensor).expand(6, -1, -1, -1).clone()
    policy = [[("Rotate", 0.5, 0.8), ("Invert", 0.5, 0.0)]]
    torch.manual_seed(0)
    video = DADA(policy)(tv_tensors.Video(frames))
    assert isinstance(video, tv_tensors.Video)
    assert all(torch.equal(video[0], frame) for frame in video)
    torch.manual_seed(0)
    assert torch.equal(video[0], DADA(policy)(frames[0]))  # the clip's draw is the first image's
    clips = DADA(policy, generator=torch.Generator().manual_seed(0))(tv_tensors.Video(frames.view(2, 3, 3, HEIGHT, WIDTH)))
    assert all(torch.equal(clip[0], frame) for clip in clips for frame in clip)
    batch = DADA(policy, generator=torch.Generator().manual_seed(0))(frames)
    assert len({bytes(image.numpy()) for image in batch}) > 1


def test_a_batch_with_targets_is_a_clear_error():
    images = _scene().expand(2, -1, -1, -1)
    with pytest.raises(ValueError, match="one image or one video per sample, got a batch of 2; for batches use"):
        DADA("imagenet")(tv_tensors.Image(images), _targets())


@pytest.mark.parametrize("values, found", [((-0.5, 2.0), r"\[-0.5, 2\]"), ((0.0, float("nan")), "NaN")])
def test_float_images_outside_0_1_are_refused(values, found):
    images = torch.full((2, 3, 8, 8), values[0])
    images[1] = values[1]
    with pytest.raises(ValueError, match=rf"expects float images in \[0, 1\] .*found .*{found}.*before Normalize"):
        DADA("cifar10")(images)
    normalized = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.2] * 3), DADA("cifar10")])
    with pytest.raises(ValueError, match="expects float images in"):
        normalized(_scene())


def test_palette_image_without_palette(photo):
    indices = photo.convert("L")
    paletted = Image.frombytes("P", indices.size, indices.tobytes())
    assert not paletted.getpalette()
    result = DADA("imagenet", generator=torch.Generator().manual_seed(4))(paletted)
    expected = DADA("imagenet", generator=torch.Generator().manual_seed(4))(indices)
    assert result.mode == "P" and result.size == photo.size and result.tobytes() == expected.tobytes()
    blank = DADA("imagenet")(Image.new("P", (16, 12)))
    assert blank.mode == "P" and blank.size == (16, 12)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_wide_pil_modes_are_refused_without_lossy_advice(mode):
    with pytest.raises(ValueError, match=rf"mode '{mode}'.*8-bit levels; to keep the data, pass a float tensor") as error:
        DADA("cifar10")(Image.new(mode, (8, 8)))
    assert "convert(" not in str(error.value)


def test_readme_batch_example_moves_boxes_as_the_per_sample_path():
    policy = [
        [("Rotate", 0.8, 0.9), ("Color", 0.5, 0.5)],
        [("TranslateX", 0.9, 0.8)],
        [("ShearY", 0.9, 0.9), ("Invert", 0.5, 0.0)],
        [("Equalize", 1.0, 0.0)],
    ]
    count, height, width = 16, HEIGHT, WIDTH
    images = _scene().as_subclass(torch.Tensor).expand(count, -1, -1, -1)
    boxes = torch.tensor([RECTANGLE, (0, 0, 20, 10)], dtype=torch.float32).expand(count, -1, -1)
    # the README's example
    dada = DADA(policy, generator=torch.Generator().manual_seed(5))
    drawn = dada.draw_params(len(images), images.device)
    augmented = dada.apply_batch(images, drawn)
    matrices = dada.affine_matrices(drawn, height, width)
    corners = boxes[..., [[0, 1], [2, 1], [2, 3], [0, 3]]].double()
    moved = corners @ matrices[:, None, :, :2].transpose(-1, -2) + matrices[:, None, None, :, 2]
    canvas = moved.new_tensor([width, height, width, height])
    moved_boxes = torch.minimum(torch.cat([moved.amin(2), moved.amax(2)], -1).clamp(min=0), canvas)
    # one sample at a time, the same generator draws the same rows
    one_by_one = DADA(policy, generator=torch.Generator().manual_seed(5))
    changed = 0
    for image, expected in zip(augmented, moved_boxes):
        sample_boxes = tv_tensors.BoundingBoxes(boxes[0], format="XYXY", canvas_size=(height, width))
        alone, target = one_by_one(_scene(), {"boxes": sample_boxes})
        assert torch.equal(alone, image)
        assert torch.allclose(target["boxes"].double(), expected, atol=1e-3), (target["boxes"], expected)
        changed += not torch.equal(target["boxes"], sample_boxes)
    assert changed >= 5


def test_affine_matrices_never_read_values_back_to_the_host(monkeypatch):
    # what would synchronise an accelerator: reading tensor values in Python
    transform = DADA("imagenet", generator=torch.Generator().manual_seed(0))
    drawn = transform.draw_params(8)

    def refuse(*args, **kwargs):
        raise AssertionError("read a tensor's values on the host")

    for name in ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    matrices = transform.affine_matrices(drawn, HEIGHT, WIDTH)
    monkeypatch.undo()
    assert matrices.shape == (8, 2, 3)


@pytest.mark.parametrize(
    "box_format, values",
    [("XYWHR", [14.0, 10, 32, 20, 0]), ("CXCYWHR", [30.0, 20, 32, 20, 0]), ("XYXYXYXY", [14.0, 10, 46, 10, 46, 30, 14, 30])],
)
def test_rotated_box_formats_turn_with_the_image(box_format, values):
    # a rotated box stays the rectangle: its corners are the image's corners moved by the draw
    transform = DADA([[("Rotate", 1.0, 0.7), ("TranslateY", 1.0, 0.6)]], generator=torch.Generator().manual_seed(0))
    matrix = transform.affine_matrices(transform.draw_params(1), HEIGHT, WIDTH)[0]
    transform.generator.manual_seed(0)
    boxes = tv_tensors.BoundingBoxes([values], format=box_format, canvas_size=(HEIGHT, WIDTH))
    _, moved = transform(_scene(), boxes)
    assert moved.format == tv_tensors.BoundingBoxFormat[box_format]
    corners = F.convert_bounding_box_format(moved, new_format="XYXYXYXY").view(4, 2).double()
    x0, y0, x1, y1 = 14, 10, 46, 30
    expected = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=torch.float64) @ matrix[:, :2].T + matrix[:, 2]
    assert torch.allclose(corners, expected, atol=1e-3)
