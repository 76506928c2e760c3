"""torchvision's own v2 transform checks, run on DADA in place of AutoAugment.

Restated in our words from torchvision's ``test/test_transforms_v2.py`` (BSD-3-Clause,
https://github.com/pytorch/vision): ``check_transform`` (pickling, every input type, whole samples
in dict, list and tuple containers, passthrough of everything that is not transformed) and
``TestAutoAugmentTransforms`` (``test_transform_smoke`` and the fills of
``test_correctness_shear_translate``). Checks that deliberately do not apply:

- ``torch.jit.script``: DADA is not scriptable. Its PIL path is PIL's own Python calls, its draws
  and policies are Python objects, and samples are dispatched by ``v2.Transform``'s Python
  ``forward``; torchvision's v2 AutoAugment scripts only by falling back to the v1 class for plain
  tensors. Under a compiler, ``DADA(compile=True)`` compiles the tensor application instead.
- v1 compatibility: DADA has no v1 counterpart (torchvision skips it for AutoAugment too).
- AutoAugment's sample adapter, which drops boxes and masks and keeps one image: DADA moves boxes
  and masks, so the samples below keep them all.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.transforms.v2.functional as F
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms import v2

from dada_transforms import DADA

SIZE = (17, 11)  # torchvision's default test size (height, width)
# torchvision's fill cases (EXHAUSTIVE_TYPE_FILLS), on the [0, 1] scale, adapted to each dtype's range
FILLS = [None, 1, 0.5, [1], [0.2], (0,), (0.7,), [1, 0, 1], [0.1, 0.2, 0.3], (0, 1, 0), (0.9, 0.234, 0.314)]


def _adapt_fill(fill, dtype: torch.dtype):
    """torchvision's ``adapt_fill``: a [0, 1] fill in the dtype's value range (levels for uint8)."""
    if fill is None:
        return None
    scale, kind = (1.0, float) if dtype.is_floating_point else (255, int)
    if isinstance(fill, (int, float)):
        return kind(fill * scale)
    return type(fill)(kind(value * scale) for value in fill)


def make_image(size=SIZE, *, dtype=torch.uint8, batch_dims=()) -> tv_tensors.Image:
    shape = (*batch_dims, 3, *size)
    if dtype.is_floating_point:
        return tv_tensors.Image(torch.rand(shape, dtype=dtype))
    return tv_tensors.Image(torch.randint(0, 256, shape, dtype=dtype))


def make_image_tensor(size=SIZE, *, dtype=torch.uint8) -> torch.Tensor:
    return make_image(size, dtype=dtype).as_subclass(torch.Tensor)


def make_image_pil(size=SIZE, *, dtype=torch.uint8) -> PIL.Image.Image:
    return F.to_pil_image(make_image(size, dtype=torch.uint8))


def make_video(size=SIZE, *, dtype=torch.uint8, frames=3) -> tv_tensors.Video:
    return tv_tensors.Video(make_image(size, dtype=dtype, batch_dims=(frames,)))


def _boxes(size, box_format) -> tv_tensors.BoundingBoxes:
    height, width = size
    xyxy = torch.tensor([[1.0, 2.0, width - 3.0, height - 4.0], [0.0, 0.0, 4.0, 5.0]])
    boxes = tv_tensors.BoundingBoxes(xyxy, format="XYXY", canvas_size=size)
    return F.convert_bounding_box_format(boxes, new_format=box_format)


def _sample(image_or_video, size) -> dict:
    """torchvision's sample: the input, an image and a video tensor, a PIL image, boxes in three formats,
    detection and segmentation masks, and items that are passed through untouched."""
    return dict(
        image_or_video=image_or_video,
        image_tv_tensor=make_image(size),
        video_tv_tensor=make_video(size, frames=1),  # one draw per clip: as many draws as the image
        image_pil=make_image_pil(size),
        bounding_boxes_xyxy=_boxes(size, tv_tensors.BoundingBoxFormat.XYXY),
        bounding_boxes_xywh=_boxes(size, tv_tensors.BoundingBoxFormat.XYWH),
        bounding_boxes_cxcywh=_boxes(size, tv_tensors.BoundingBoxFormat.CXCYWH),
        detection_mask=tv_tensors.Mask(torch.randint(0, 2, (2, *size), dtype=torch.bool)),
        segmentation_mask=tv_tensors.Mask(torch.randint(0, 5, size, dtype=torch.uint8)),
        int=0, float=0.0, bool=True, none=None, str="str", path=Path.cwd(), object=object(),
        tensor=torch.empty(5), array=np.empty(5),
    )


def _check_sample(transform: DADA, image_or_video) -> None:
    """Whole samples in dict, list and tuple containers: the same structure back, each transformed
    item of its own type, everything else the very same object."""
    sample = _sample(image_or_video, F.get_size(image_or_video))
    for container in (dict, list, tuple):
        inputs = sample if container is dict else container(sample.values())
        flat_inputs, spec = tree_flatten(inputs)
        torch.manual_seed(0)
        flat_outputs, output_spec = tree_flatten(transform(inputs))
        assert output_spec == spec
        needs_transform = v2.Transform()._needs_transform_list(flat_inputs)
        for output, item, transformed in zip(flat_outputs, flat_inputs, needs_transform):
            if transformed:
                assert type(output) is type(item)
            else:
                assert output is item


def check_transform(transform: DADA, image_or_video) -> None:
    """torchvision's ``check_transform``, less the checks listed in the module's docstring."""
    clone = pickle.loads(pickle.dumps(transform))
    for applied in (transform, clone):
        output = applied(image_or_video)
        assert isinstance(output, type(image_or_video))
        if isinstance(image_or_video, torch.Tensor):
            assert output.shape == image_or_video.shape and output.dtype == image_or_video.dtype
            assert output.device == image_or_video.device
        else:
            assert (output.mode, output.size) == (image_or_video.mode, image_or_video.size)
    _check_sample(transform, image_or_video)


MAKERS = [make_image_tensor, make_image_pil, make_image, make_video]


@pytest.mark.parametrize("policy", ["cifar10", "imagenet"])
@pytest.mark.parametrize("make_input", MAKERS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_transform_smoke(policy, make_input, dtype):
    """torchvision's ``TestAutoAugmentTransforms.test_transform_smoke``, with DADA; seeded per case,
    and several draws per case (one draw covers little of a policy)."""
    if make_input is make_image_pil and dtype is not torch.uint8:
        pytest.skip("a PIL image is uint8 whatever the dtype asked")
    torch.manual_seed(hash((make_input.__name__, str(dtype), policy)) % 2**32)
    for _ in range(4):
        check_transform(DADA(policy), make_input(dtype=dtype))


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("make_input", MAKERS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_transform_with_torchvisions_fills(fill, make_input, dtype):
    """Every fill form torchvision's tests pass (numbers, one- and three-element lists and tuples), in
    the input's range, alone and keyed by the input's type; geometric operations only, so it is used."""
    if make_input is make_image_pil and dtype is not torch.uint8:
        pytest.skip("a PIL image is uint8 whatever the dtype asked")
    image = make_input(dtype=dtype)
    value = _adapt_fill(fill, dtype)
    geometric = [[(op, 1.0, 0.9)] for op in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")]
    key = PIL.Image.Image if make_input is make_image_pil else type(image)
    for transform in (DADA(geometric, fill=value), DADA(geometric, fill={key: value, "others": None})):
        check_transform(transform, image)


@pytest.mark.parametrize("op", ["ShearX", "ShearY", "TranslateX", "TranslateY"])
@pytest.mark.parametrize("fill", [None, 0.5, [0.1, 0.2, 0.3]])  # torchvision's CORRECTNESS_FILLS
@pytest.mark.parametrize("input_type", ["Tensor", "PIL"])
def test_correctness_shear_translate(op, fill, input_type):
    """torchvision's ``test_correctness_shear_translate``: the AA-native ops against PIL's affine
    transform with the same fill (DADA's arguments: the method's, as a fraction of the size for
    translations), here byte for byte with nearest resampling."""
    image = make_image(dtype=torch.uint8).as_subclass(torch.Tensor)
    pil = F.to_pil_image(image)
    fill = _adapt_fill(fill, torch.uint8)
    transform = DADA([[(op, 1.0, 0.8)]], fill={torch.Tensor: fill, PIL.Image.Image: fill}, generator=torch.Generator())
    transform.generator.manual_seed(0)
    argument = float(transform.draw_params(1).arguments[0, 0])
    width, height = pil.size
    matrix = {
        "ShearX": (1, argument, 0, 0, 1, 0), "ShearY": (1, 0, 0, argument, 1, 0),
        "TranslateX": (1, 0, argument * width, 0, 1, 0), "TranslateY": (1, 0, 0, 0, 1, argument * height),
    }[op]
    fillcolor = None if fill is None else tuple([fill] * 3 if isinstance(fill, int) else fill)
    moved = pil.transform(pil.size, PIL.Image.Transform.AFFINE, matrix, PIL.Image.Resampling.NEAREST, fillcolor=fillcolor)
    expected = F.pil_to_tensor(moved)
    transform.generator.manual_seed(0)
    actual = transform(image if input_type == "Tensor" else pil)
    assert torch.equal(actual if input_type == "Tensor" else F.pil_to_tensor(actual), expected)
