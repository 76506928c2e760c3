"""The published mode: the settings in the published policies' names, and the authors' ImageNet search pipeline.

The pipeline: RandomResizedCrop (torchvision's box rules, PIL's bicubic) and a
horizontal flip, then ColorJitter, before the policy; PCA lighting after it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

import dada_transforms.search.bilevel as bilevel_module
import dada_transforms.search.loop as loop_module
import dada_transforms.search.settings as settings_module
from dada_transforms.search.augmentation import AugmentationParameters
from dada_transforms.search.batches import draw_resized_crop, resized_crop_and_flip
from dada_transforms.search.distributed import Processes
from dada_transforms.search.loop import search
from dada_transforms.search.settings import SearchInputError, resolve_settings


@pytest.mark.parametrize(
    "dataset, lr, cutout, crop",
    [
        ("reduced-cifar10", 0.1, 16, "pad"),
        ("reduced-cifar100", 0.025, 16, "pad"),  # the name's lr; the authors' shell script has 0.1
        ("reduced-svhn", 0.00125, 20, "pad"),  # the name's Cutout; the shell script has 16
        ("reduced-imagenet", 0.00125, 0, "resized"),  # the name's Cutout; the shell script has 16
        ("imagenet", 0.00125, 0, "resized"),
        ("imagefolder", 0.1, 16, "pad"),
    ],
)
def test_defaults_are_the_settings_in_the_published_names(dataset, lr, cutout, crop):
    settings = resolve_settings(dataset)
    assert (settings.lr, settings.cutout, settings.crop) == (lr, cutout, crop)
    shell_script = resolve_settings(dataset, lr=0.1, cutout=16)  # the shell script's values stay one option away
    assert (shell_script.lr, shell_script.cutout) == (0.1, 16)


@pytest.mark.parametrize("height, width", [(24, 24), (12, 60), (60, 9)])
def test_resized_crop_boxes_follow_torchvision_get_params(height, width):
    count = 5_000
    ours = draw_resized_crop(count, height, width, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    image = torch.zeros(1, height, width)
    reference = torch.tensor(
        [RandomResizedCrop.get_params(image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3]) for _ in range(count)]
    )
    top, left, box_height, box_width = ours.unbind(1)
    assert (box_height >= 1).all() and (box_width >= 1).all()
    assert (top >= 0).all() and (left >= 0).all() and (top + box_height <= height).all() and (left + box_width <= width).all()
    for column in range(4):  # same distribution of top, left, height and width
        assert ks_2samp(ours[:, column].numpy(), reference[:, column].numpy()).pvalue > 1e-3, column


@pytest.mark.parametrize("height, width", [(1, 100), (100, 1)])
def test_resized_crop_falls_back_to_torchvision_central_box(height, width):
    """Where none of the 10 boxes fits (always, for these shapes), the central crop of the nearest allowed ratio."""
    ours = draw_resized_crop(50, height, width, torch.Generator().manual_seed(0))
    reference = RandomResizedCrop.get_params(torch.zeros(1, height, width), scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
    assert ours.tolist() == [list(reference)] * 50


def test_resized_crop_and_flip_is_pil_crop_resize_bicubic_and_flip():
    images = torch.randint(0, 256, (40, 3, 24, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = resized_crop_and_flip(images, torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)  # the same draws: boxes, then flips
    boxes = draw_resized_crop(40, 24, 20, replay)
    flips = torch.randint(0, 2, (40,), generator=replay)
    assert 0 < flips.sum() < 40
    for index in range(40):
        top, left, height, width = boxes[index].tolist()
        expected = Image.fromarray(images[index].permute(1, 2, 0).numpy())
        expected = expected.crop((left, top, left + width, top + height)).resize((20, 24), Image.BICUBIC)
        if flips[index]:
            expected = expected.transpose(Image.FLIP_LEFT_RIGHT)
        assert torch.equal(ours[index], torch.from_numpy(np.array(expected)).permute(2, 0, 1)), index


def test_resized_crop_each_process_keeps_its_slice_of_the_global_draw():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = resized_crop_and_flip(images, torch.Generator().manual_seed(5))
    for rank in range(2):
        processes = Processes(rank=rank, world_size=2)
        part = resized_crop_and_flip(processes.shard(images), torch.Generator().manual_seed(5), processes=processes)
        assert torch.equal(part, processes.shard(whole))


@pytest.fixture
def image_tree(tmp_path):
    """2 classes x 12 images of 16x16 px."""
    rng = np.random.RandomState(0)
    for label in range(2):
        (tmp_path / "images" / f"class{label}").mkdir(parents=True)
        for index in range(12):
            Image.fromarray((rng.rand(16, 16, 3) * 255).astype(np.uint8)).save(tmp_path / "images" / f"class{label}" / f"{index}.png")
    return tmp_path / "images"


def test_imagenet_search_order_is_crop_jitter_policy_lighting(monkeypatch, image_tree, tmp_path):
    """With the ImageNet row's pipeline (put on imagefolder here), each step runs crop, ColorJitter, policy, lighting."""
    row = settings_module._PUBLISHED["imagenet"]
    monkeypatch.setitem(settings_module._PUBLISHED, "cifar10", dataclasses.replace(row, model="wrn-10-1", image_size=16))
    calls: list[tuple[str, torch.Tensor]] = []

    def recorded(name, function):
        def wrapper(*args, **kwargs):
            output = function(*args, **kwargs)
            calls.append((name, args[1] if name == "policy" else args[0], output))
            return output

        return wrapper

    monkeypatch.setattr(loop_module, "resized_crop_and_flip", recorded("crop", loop_module.resized_crop_and_flip))
    monkeypatch.setattr(loop_module, "color_jittered", recorded("jitter", loop_module.color_jittered))
    monkeypatch.setattr(AugmentationParameters, "augment", recorded("policy", AugmentationParameters.augment))
    monkeypatch.setattr(bilevel_module, "lighting", recorded("lighting", bilevel_module.lighting))
    search("imagefolder", name="order", output=tmp_path / "out", data_dir=image_tree, batch_size=4, epochs=1, device="cpu", progress=False)
    names = [name for name, _, _ in calls]
    assert names == ["crop", "jitter", "policy", "lighting"] * 3  # 3 steps
    for step in range(3):
        (_, _, cropped), (_, jitter_input, jittered), (_, policy_input, augmented), (_, lighting_input, _) = calls[4 * step : 4 * step + 4]
        assert jitter_input is cropped and policy_input is jittered and jittered.dtype == torch.uint8
        assert torch.equal(lighting_input, augmented.images)
        assert not torch.equal(jittered, cropped)  # ColorJitter did change the images before the policy


def test_checkpoint_of_the_previous_format_is_refused_with_a_clear_message(monkeypatch, image_tree, tmp_path):
    """Settings gained ``crop`` and history entries ``objective``: a version-3 checkpoint cannot resume."""
    options = dict(name="old", output=tmp_path / "out", data_dir=image_tree, model="wrn-10-1", image_size=16, batch_size=4, device="cpu", progress=False)
    original = loop_module.check_parameters

    def stop_after_the_first_epoch(modules, epoch):  # called before the epoch's checkpoint is saved
        original(modules, epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop_module, "check_parameters", stop_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        search("imagefolder", epochs=2, **options)
    index_path = tmp_path / "out" / "old.checkpoint" / "checkpoint.json"
    index = json.loads(index_path.read_text())
    assert index["settings"]["crop"] == "pad" and len(index["history"][0]["objective"]) == 21
    index["version"] = 3
    del index["settings"]["crop"]
    for entry in index["history"]:
        del entry["objective"]
    index_path.write_text(json.dumps(index))
    monkeypatch.setattr(loop_module, "check_parameters", original)
    with pytest.raises(SearchInputError, match="not a version-4 dada-search-checkpoint file.*--overwrite"):
        search("imagefolder", epochs=2, resume=True, **options)
