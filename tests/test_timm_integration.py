"""DADA in timm's own create_transform / create_loader, compared with what timm builds itself."""

from __future__ import annotations

import logging
import math
import sys
import types

import pytest
import timm
import timm.data
import torch
from PIL import Image, ImageOps
from timm.data import AugMixDataset, create_dataset, create_loader, create_transform
from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
from torchvision.transforms.functional import pil_to_tensor

from dada_transforms import DADA, Policy, list_presets, load_policy
from dada_transforms.timm_integration import register

SIZE = 48


@pytest.fixture(scope="module", autouse=True)
def timm_knows_dada():
    """The .pth hook does this at start-up in a regular install; editable test runs may lack it."""
    register()


def _split_at_augment(pipeline, augment_type):
    """(the one transform of ``augment_type``, reprs of all the others in order)."""
    steps = pipeline.transforms
    found = [step for step in steps if isinstance(step, augment_type)]
    assert len(found) == 1, f"expected one {augment_type.__name__} in {pipeline}"
    return found[0], [repr(step) if step is not found[0] else "<augment>" for step in steps]


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_takes_timms_auto_augment_slot(name):
    dada, dada_steps = _split_at_augment(create_transform(SIZE, is_training=True, auto_augment=f"dada-{name}"), DADA)
    _, rand_steps = _split_at_augment(create_transform(SIZE, is_training=True, auto_augment="rand-m9-mstd0.5"), RandAugment)
    assert dada.policy == load_policy(name)
    assert dada_steps == rand_steps
    assert dada.magnitude_std == 0.0


@pytest.mark.parametrize(
    ("config", "expected_type"),
    [("rand-m9-mstd0.5", RandAugment), ("augmix-m5-w4-d2", AugMixAugment), ("original", AutoAugment), ("v0r", AutoAugment)],
)
def test_other_configs_still_build_timms_own_transforms(config, expected_type):
    pipeline = create_transform(SIZE, is_training=True, auto_augment=config)
    assert sum(isinstance(step, expected_type) for step in pipeline.transforms) == 1
    assert not any(isinstance(step, DADA) for step in pipeline.transforms)


def test_wrapped_function_passes_other_configs_unchanged():
    patched = timm.data.transforms_factory.auto_augment_transform
    hparams = {"translate_const": 20, "img_mean": (124, 116, 104)}
    assert repr(patched("original-mstd0.5", dict(hparams))) == repr(patched.__wrapped__("original-mstd0.5", dict(hparams)))
    with pytest.raises(AssertionError):  # timm's own error for an unknown policy, as before
        patched("nosuchpolicy", dict(hparams))


def test_all_entry_points_are_patched():
    patched = timm.data.transforms_factory.auto_augment_transform
    assert timm.data.auto_augment.auto_augment_transform is patched
    assert timm.data.auto_augment_transform is patched
    assert isinstance(timm.data.auto_augment_transform("dada-svhn"), DADA)


def test_magnitude_noise_suffix_is_in_timm_levels():
    pipeline = create_transform(SIZE, is_training=True, auto_augment="dada-imagenet-mstd0.5")
    dada, _ = _split_at_augment(pipeline, DADA)
    assert dada.magnitude_std == pytest.approx(0.05)
    assert dada.policy == load_policy("imagenet")


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("dada-imagenet-bogus1", "'bogus1'"),
        ("dada-nosuchpreset", "'nosuchpreset'"),
        ("dada-nosuchpreset-mstd0.5", "'nosuchpreset'"),
        ("dada-imagenet-mstd0.5-mstd1", "'mstd'"),
        ("dada-", "'dada-'"),
        ("dada-imagenet-mstdinf", "'mstdinf'"),
        ("dada-~nosuchuser/x.json", "no such user"),
        ("dada-" + "a" * 300 + ".json", "a" * 300),
    ],
)
def test_bad_configs_raise_naming_the_problem(config, named):
    with pytest.raises(ValueError, match=named):
        create_transform(SIZE, is_training=True, auto_augment=config)


def test_unknown_suffix_error_lists_the_known_ones():
    with pytest.raises(ValueError, match="mstd"):
        create_transform(SIZE, is_training=True, auto_augment="dada-cifar10-m9")


def _rotate_policy_file(folder):
    path = folder / "my-policies" / "strong-rotate.json"
    path.parent.mkdir()
    Policy.from_list([[("Rotate", 1.0, 1.0)]], name="strong-rotate").to_json(path)
    return path


def test_policy_file_with_dashes_and_a_suffix(tmp_path):
    path = _rotate_policy_file(tmp_path)
    dada, _ = _split_at_augment(create_transform(SIZE, is_training=True, auto_augment=f"dada-{path}-mstd2"), DADA)
    assert dada.policy == Policy.from_json(path)
    assert dada.magnitude_std == pytest.approx(0.2)


def test_user_preset_with_dashes(tmp_path, monkeypatch):
    monkeypatch.setenv("DADA_PRESET_DIR", str(tmp_path))
    Policy.from_list([[("Invert", 0.5, 0.5), ("Cutout", 0.5, 0.2)]], name="my-preset").to_json(tmp_path / "my-preset.json")
    dada, _ = _split_at_augment(create_transform(SIZE, is_training=True, auto_augment="dada-my-preset-mstd1"), DADA)
    assert dada.policy == load_policy("my-preset")
    assert dada.magnitude_std == pytest.approx(0.1)


def test_hub_spec_with_dashes_revision_and_suffix(monkeypatch):
    """``dada-hf-hub:org/name@rev-mstd<x>``: the Hub loader gets ``org/name@rev`` (faked: no network)."""
    asked = []
    policy = load_policy("svhn")

    def load_hub_policy(repo_spec):
        asked.append(repo_spec)
        return policy

    monkeypatch.setitem(sys.modules, "dada_transforms.hub", types.SimpleNamespace(load_hub_policy=load_hub_policy))
    config = "dada-hf-hub:some-org/dada-policy@v1-final-mstd1.5"
    dada, _ = _split_at_augment(create_transform(SIZE, is_training=True, auto_augment=config), DADA)
    assert asked == ["some-org/dada-policy@v1-final"]
    assert dada.policy == policy and dada.magnitude_std == pytest.approx(0.15)


def test_timm_hparams_set_fill_and_interpolation(tmp_path):
    """timm's img_mean fills what rotation uncovers; timm's interpolation resamples."""
    mean = (0.2, 0.5, 0.9)
    timm_mean = tuple(min(255, round(255 * x)) for x in mean)  # as timm computes img_mean
    config = f"dada-{_rotate_policy_file(tmp_path)}"
    for interpolation, expected in (("bicubic", "bicubic"), ("bilinear", "bilinear"), ("random", "nearest")):
        pipeline = create_transform(SIZE, is_training=True, auto_augment=config, mean=mean, interpolation=interpolation)
        dada, _ = _split_at_augment(pipeline, DADA)
        assert dada.interpolation == expected
        assert dada.fill == timm_mean
        rotated = dada(Image.new("RGB", (SIZE, SIZE), (255, 255, 255)))
        assert rotated.getpixel((0, 0)) == timm_mean  # a corner rotated 30 degrees away from the image


def test_paper_defaults_outside_timm():
    dada = DADA("imagenet")
    assert (dada.interpolation, dada.fill, dada.magnitude_std) == ("nearest", None, 0.0)


def test_timm_random_interpolation_tuple_is_a_clear_error():
    with pytest.raises(ValueError, match="random choice"):
        timm.data.auto_augment_transform("dada-imagenet", {"interpolation": (Image.BILINEAR, Image.BICUBIC)})


def test_unsupported_timm_interpolation_is_a_clear_error():
    with pytest.raises(ValueError, match="dada-imagenet"):
        create_transform(SIZE, is_training=True, auto_augment="dada-imagenet", interpolation="lanczos")


def _image_folder(root, make_image, classes=2, per_class=4):
    for label in range(classes):
        (root / f"class{label}").mkdir(parents=True)
        for index in range(per_class):
            make_image(40 + index, 36, seed=label * 100 + index).save(root / f"class{label}" / f"{index}.png")
    return root


def test_aug_splits_with_augmix_dataset(tmp_path, make_image):
    """train.py's --aug-splits: timm's separate transforms and AugMixDataset around the DADA slot."""
    primary, secondary, final = create_transform(
        SIZE, is_training=True, auto_augment="dada-imagenet", separate=True
    )
    assert any(isinstance(step, DADA) for step in secondary.transforms)
    dataset = create_dataset("", root=str(_image_folder(tmp_path / "train", make_image)), is_training=True)
    splits = AugMixDataset(dataset, num_splits=3)
    loader = create_loader(
        splits, SIZE, batch_size=4, is_training=True, auto_augment="dada-imagenet",
        num_aug_splits=3, num_workers=0, persistent_workers=False, use_prefetcher=False,
    )
    images, _ = next(iter(loader))
    assert len(images) == 3 and all(split.shape == (4, 3, SIZE, SIZE) for split in images)
    assert any(isinstance(step, DADA) for step in splits.augmentation.transforms)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_create_loader_workers_and_one_training_step(tmp_path, make_image, start_method):
    """timm's create_dataset + create_loader (2 workers, fork and spawn) feed one SGD step."""
    dataset = create_dataset("", root=str(_image_folder(tmp_path / "train", make_image)), is_training=True)
    timm_loader = create_loader(
        dataset, (3, 32, 32), batch_size=4, is_training=True, auto_augment="dada-cifar10",
        num_workers=2, use_prefetcher=False, persistent_workers=False,
    )
    assert any(isinstance(step, DADA) for step in timm_loader.dataset.transform.transforms)
    loader = torch.utils.data.DataLoader(  # timm's dataset, transform, collate and worker seeding
        timm_loader.dataset, batch_size=4, shuffle=True, num_workers=2, collate_fn=timm_loader.collate_fn,
        worker_init_fn=timm_loader.worker_init_fn, multiprocessing_context=start_method,
    )
    model = timm.create_model("test_resnet", num_classes=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    batches = 0
    for images, targets in loader:
        assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batches += 1
    assert batches == 2 and math.isfinite(loss.item())
    assert any(not torch.equal(old, new) for old, new in zip(before, model.parameters()))


# -- Posterize never asks Pillow for 0 bits (Pillow 13 rejects it; timm's own --aa v0 fails there) --

MAGNITUDES = [0.0, 1.0, *[step / 20 for step in range(1, 20)]]


@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_posterize_matches_pil_at_every_magnitude(make_image, magnitude):
    image = make_image(40, 32)
    expected = ImageOps.posterize(image, int(4 + 4 * magnitude))
    dada = DADA([[("Posterize", 1.0, magnitude)]])
    assert dada(image).tobytes() == expected.tobytes()
    assert torch.equal(dada(pil_to_tensor(image)), pil_to_tensor(expected))


def test_posterize_with_heavy_magnitude_noise_never_fails(make_image):
    image = make_image(32, 32)
    dada = DADA([[("Posterize", 1.0, 0.0)]], magnitude_std=5.0, generator=torch.Generator().manual_seed(0))
    allowed = {bytes(ImageOps.posterize(image, bits).tobytes()) for bits in range(4, 9)}
    for _ in range(50):
        assert dada(image).tobytes() in allowed
    batch = pil_to_tensor(image).expand(16, -1, -1, -1)
    allowed_tensors = [pil_to_tensor(ImageOps.posterize(image, bits)) for bits in range(4, 9)]
    for row in dada(batch):
        assert any(torch.equal(row, candidate) for candidate in allowed_tensors)



def test_one_log_line_on_train_pys_logger_names_the_policy(caplog, tmp_path):
    config = f"dada-{_rotate_policy_file(tmp_path)}-mstd0.5"
    with caplog.at_level(logging.INFO, logger="train"):
        for _ in range(3):  # e.g. the train transform built again for each aug split: still one line
            create_transform(32, is_training=True, auto_augment=config)
    lines = [record for record in caplog.records if record.name == "train"]
    assert [record.getMessage() for record in lines] == [
        f"DADA: applying policy 'strong-rotate' (1 sub-policies) for auto_augment {config!r}, interpolation bilinear, "
        f"magnitude_std 0.05"
    ]
