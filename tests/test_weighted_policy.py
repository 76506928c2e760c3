"""Policies that sample their sub-policies by weight (our extension beyond the paper): the file format,
sampling on both paths, uniform policies unchanged, ``show``, timm and ``dada-search --export weighted``."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import pytest
import timm.data
import torch
import torchvision.transforms.v2.functional as TF
from safetensors import safe_open
from scipy.stats import chisquare
from torchvision import tv_tensors

from dada_transforms import DADA, Policy, list_presets, load_policy
from dada_transforms.cli import main as cli_main
from dada_transforms.params import applied_operations, draw_one
from dada_transforms.search.cli import main as search_main
from dada_transforms.search.space import SUB_POLICIES
from dada_transforms.timm_integration import register

_spec = importlib.util.spec_from_file_location("sync_recorder", Path(__file__).with_name("sync_recorder.py"))
sync_recorder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync_recorder)

# One operation per sub-policy, always applied: the operation drawn names the sub-policy chosen.
MARKED = [[("Invert", 1.0, 0.0)], [("Equalize", 1.0, 0.0)], [("AutoContrast", 1.0, 0.0)], [("Solarize", 1.0, 0.5)]]
WEIGHTS = [1.0, 2.0, 3.0, 4.0]
TINY = ["--model", "wrn-10-1", "--image-size", "16", "--cutout", "8", "--batch-size", "4", "--device", "cpu"]
# DADA("cifar10", generator seeded 7).draw_params(24).sub_policies, computed at the commit before weights existed.
UNIFORM_CIFAR10_SEED_7 = [6, 18, 2, 20, 4, 4, 17, 13, 7, 17, 9, 2, 15, 23, 21, 24, 12, 15, 17, 1, 16, 23, 11, 6]
UNIFORM_CIFAR10_PIL_SEED_7 = [["AutoContrast"], ["ShearX", "Invert"], [], ["Rotate"], ["ShearX"], ["TranslateY"]]


def _weighted_cifar10() -> Policy:
    policy = load_policy("cifar10")
    return Policy(policy.sub_policies, name="weighted", sampling_weights=[float(i + 1) ** 2 for i in range(len(policy))])


def _assert_frequencies_match(counts: list[int], weights: list[float]) -> None:
    total = sum(counts)
    expected = [total * weight / sum(weights) for weight in weights]
    assert chisquare(counts, expected).pvalue > 1e-3, (counts, expected)  # fixed seeds: deterministic


def test_tensor_path_draws_sub_policies_with_their_weights():
    transform = DADA(Policy.from_list(MARKED, sampling_weights=WEIGHTS), generator=torch.Generator().manual_seed(0))
    drawn = transform.draw_params(20_000)
    _assert_frequencies_match(torch.bincount(drawn.sub_policies, minlength=4).tolist(), WEIGHTS)


def test_pil_path_draws_sub_policies_with_their_weights():
    policy = Policy.from_list(MARKED, sampling_weights=WEIGHTS)
    generator = torch.Generator().manual_seed(0)
    names = [draw_one(policy, 1, 0.0, generator)[0][0].name for _ in range(4_000)]
    _assert_frequencies_match([names.count(sub_policy[0][0]) for sub_policy in MARKED], WEIGHTS)


def test_pil_and_tensor_paths_give_the_same_images_for_a_seed(make_image):
    image = make_image(36, 28)
    transform = DADA(_weighted_cifar10())
    for seed in range(40):
        torch.manual_seed(seed)
        from_pil = TF.pil_to_tensor(transform(image))
        torch.manual_seed(seed)
        from_batch = transform(TF.pil_to_tensor(image).unsqueeze(0))  # a batch: the tensor kernels and draw()
        assert torch.equal(from_batch[0], from_pil), seed


def test_batch_and_single_draws_apply_the_same_operations():
    policy = _weighted_cifar10()
    drawn = DADA(policy, generator=torch.Generator().manual_seed(3)).draw_params(200)
    generator = torch.Generator().manual_seed(3)
    singles = [draw_one(policy, 2, 0.0, generator) for _ in range(200)]
    assert [[(spec.name, argument) for spec, argument, _ in row] for row in applied_operations(drawn)] == [
        [(spec.name, argument) for spec, argument, _ in row] for row in singles
    ]
    assert len(set(drawn.sub_policies.tolist())) > 10


def test_uniform_policies_draw_what_they_drew_before_weights_existed():
    transform = DADA("cifar10", generator=torch.Generator().manual_seed(7))
    assert transform.draw_params(24).sub_policies.tolist() == UNIFORM_CIFAR10_SEED_7
    generator = torch.Generator().manual_seed(7)
    singles = [[spec.name for spec, _, _ in draw_one(transform.policy, 2, 0.0, generator)] for _ in range(6)]
    assert singles == UNIFORM_CIFAR10_PIL_SEED_7


def test_search_weights_in_metadata_are_information_only(tmp_path):
    policy = load_policy("cifar10")
    document = {**policy.to_dict(), "metadata": {"sub_policy_weights": [float(i + 1) for i in range(len(policy))]}}
    with_metadata = Policy.from_dict(document)
    assert with_metadata.sampling_weights is None and with_metadata == policy
    draws = [DADA(p, generator=torch.Generator().manual_seed(7)).draw_params(24).sub_policies.tolist() for p in (policy, with_metadata)]
    assert draws[0] == draws[1] == UNIFORM_CIFAR10_SEED_7


@pytest.mark.parametrize("name", list_presets())
def test_built_in_presets_stay_uniform_version_1_files(name):
    policy = load_policy(name)
    assert policy.sampling_weights is None and policy.sampling_probabilities is None
    assert policy.to_dict()["version"] == 1 and "sampling_weights" not in policy.to_dict()


def test_json_round_trip_keeps_the_weights(tmp_path):
    policy = Policy.from_list(MARKED, name="marked", sampling_weights=WEIGHTS)
    path = tmp_path / "marked.json"
    policy.to_json(path)
    data = json.loads(path.read_text())
    assert data["version"] == 2 and data["sampling_weights"] == WEIGHTS
    loaded = Policy.from_json(path)
    assert loaded == policy and hash(loaded) == hash(policy) and loaded.sampling_weights == tuple(WEIGHTS)
    assert loaded.sampling_probabilities == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-15)
    assert loaded != Policy.from_list(MARKED, name="marked")  # uniform is another policy
    assert repr(loaded) == "Policy('marked', 4 sub-policies, weighted)"
    unweighted = Policy.from_list(MARKED)
    assert json.loads(unweighted.to_json())["version"] == 1 and Policy.from_json(unweighted.to_json()) == unweighted


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1.0, 2.0, 3.0], "'sampling_weights' has 3 numbers for 4 sub-policies"),
        ([1.0, -2.0, 3.0, 4.0], "sampling weight 1 must be > 0, got -2.0"),
        ([1.0, 2.0, 0, 4.0], "sampling weight 2 must be > 0, got 0"),
        ([0.0, 0.0, 0.0, 0.0], "sampling weight 0 must be > 0, got 0.0"),
        ([1.0, float("nan"), 3.0, 4.0], "sampling weight 1 must be a finite number > 0, got nan"),
        ([1.0, 2.0, float("inf"), 4.0], "sampling weight 2 must be a finite number > 0, got inf"),
        ([True, 2.0, 3.0, 4.0], "sampling weight 0 must be a finite number > 0, got True"),
        ([1.0, "2", 3.0, 4.0], "sampling weight 1 must be a finite number > 0, got '2'"),
        ([1e308, 1e308, 1.0, 1.0], "the sampling weights sum to inf"),
        ("1234", "'sampling_weights' must be a list of numbers, one per sub-policy, got '1234'"),
    ],
)
def test_invalid_weights_are_clear_errors(weights, message):
    with pytest.raises(ValueError) as error:
        Policy.from_list(MARKED, sampling_weights=weights)
    assert message in str(error.value)
    document = {**Policy.from_list(MARKED).to_dict(), "version": 2, "sampling_weights": weights}
    with pytest.raises(ValueError) as error:
        Policy.from_dict(document)
    assert message in str(error.value)


def test_weights_need_version_2_and_newer_versions_are_refused():
    document = {**Policy.from_list(MARKED).to_dict(), "sampling_weights": WEIGHTS}
    with pytest.raises(ValueError, match="unknown keys in policy: sampling_weights"):
        Policy.from_dict(document)  # version 1 has no weights: never read as uniform
    with pytest.raises(ValueError, match="unsupported policy format version 3; this library reads 1 and 2"):
        Policy.from_dict({**document, "version": 3})
    assert Policy.from_dict({**document, "version": 2}).sampling_weights == tuple(WEIGHTS)


def test_show_prints_sampling_probabilities_or_says_uniform(tmp_path, capsys):
    path = tmp_path / "marked.json"
    Policy.from_list(MARKED, name="marked", sampling_weights=WEIGHTS).to_json(path)
    assert cli_main(["show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "chosen with" in shown and "chosen uniformly" not in shown
    lines = [line.split() for line in shown.splitlines() if line.strip().startswith(("1 ", "2 ", "3 ", "4 "))]
    assert [line[1] for line in lines] == ["0.1000", "0.2000", "0.3000", "0.4000"]
    assert cli_main(["show", "cifar10"]) == 0
    shown = capsys.readouterr().out
    assert "chosen uniformly" in shown and "chosen with" not in shown


class _Augmented(torch.utils.data.Dataset):
    """40 copies of a grey ramp, augmented by ``transform`` in the worker."""

    def __init__(self, transform: DADA) -> None:
        self.transform = transform
        self.image = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, -1, -1).contiguous()

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.image)


def test_pickled_transforms_and_dataloader_workers_keep_the_weights():
    transform = DADA(Policy.from_list(MARKED, sampling_weights=[1.0, 1.0, 1.0, 97.0]), generator=torch.Generator().manual_seed(5))
    copy = pickle.loads(pickle.dumps(transform))
    assert copy.policy == transform.policy
    assert torch.equal(copy.draw_params(64).sub_policies, transform.draw_params(64).sub_policies)
    dataset = _Augmented(transform)
    solarized = TF.solarize(dataset.image, 128)
    outputs = list(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1))
    assert sum(torch.equal(output, solarized) for output in outputs) >= 34  # 97% of 40 expected


def test_v2_samples_follow_the_weighted_draw(make_image):
    transform = DADA(_weighted_cifar10())
    image = tv_tensors.Image(TF.pil_to_tensor(make_image(32, 24)))
    boxes = tv_tensors.BoundingBoxes([[4, 4, 20, 16]], format="XYXY", canvas_size=(24, 32))
    for seed in range(10):
        torch.manual_seed(seed)
        augmented, _ = transform(image, boxes)
        torch.manual_seed(seed)
        assert torch.equal(augmented, transform(image))


def test_weighted_draws_never_synchronise_or_copy_to_the_device():
    transform = DADA(_weighted_cifar10())
    transform.draw_params(8, "meta")  # the first draw puts the table (weights included) on the device, once
    with sync_recorder.SyncRecorder() as recorder:
        drawn = transform.draw_params(8, "meta")
    assert recorder.synchronising == [] and recorder.host_to_device == []
    assert "searchsorted" in " ".join(recorder.names) and drawn.sub_policies.device.type == "meta"


def test_timm_auto_augment_samples_a_weighted_preset_by_weight(tmp_path):
    register()
    path = tmp_path / "marked.json"
    Policy.from_list(MARKED, name="marked", sampling_weights=WEIGHTS).to_json(path)
    pipeline = timm.data.create_transform(32, is_training=True, auto_augment=f"dada-{path}")
    transform = next(step for step in pipeline.transforms if isinstance(step, DADA))
    assert transform.policy.sampling_weights == tuple(WEIGHTS)
    generator = torch.Generator().manual_seed(0)
    transform.generator = generator
    counts = torch.bincount(transform.draw_params(20_000).sub_policies, minlength=4).tolist()
    _assert_frequencies_match(counts, WEIGHTS)


def _search(image_tree: Path, output: Path, *extra: str) -> int:
    try:
        return search_main([
            "--dataset", "imagefolder", "--data-dir", str(image_tree), "--epochs", "1", "--name", "run",
            "--output", str(output), "--no-progress", *TINY, *extra,
        ])
    except SystemExit as exit:
        return exit.code


def test_search_export_weighted_writes_the_renormalised_learned_weights(image_tree, tmp_path):
    assert _search(image_tree, tmp_path / "weighted", "--top-k", "6", "--export", "weighted") == 0
    policy = Policy.from_json(tmp_path / "weighted" / "run.json")
    with safe_open(str(tmp_path / "weighted" / "run.safetensors"), "pt") as handle:
        alpha = handle.get_tensor("alpha").double()
    kept = alpha.float().softmax(0).argsort(descending=True, stable=True)[:6]
    assert [tuple(operation.op for operation in sub_policy) for sub_policy in policy] == [SUB_POLICIES[i] for i in kept]
    learned = alpha.softmax(0)[kept]
    assert policy.sampling_weights == pytest.approx((learned / learned.sum()).tolist(), rel=1e-12)
    assert policy.metadata["search"]["export"] == "weighted"

    assert _search(image_tree, tmp_path / "top-k", "--top-k", "6") == 0  # the default: the paper's, uniform
    uniform = Policy.from_json(tmp_path / "top-k" / "run.json")
    assert uniform.sampling_weights is None and uniform.metadata["search"]["export"] == "top-k"
    assert json.loads((tmp_path / "top-k" / "run.json").read_text())["version"] == 1


def test_search_export_must_be_a_known_choice(tmp_path, capsys):
    assert _search(tmp_path, tmp_path / "out", "--export", "soft") == 2
    assert "--export: invalid choice: 'soft'" in capsys.readouterr().err


def test_checkpoint_from_before_export_existed_resumes_as_top_k(image_tree, tmp_path, stopping_after_a_checkpoint):
    from dada_transforms.search.loop import search

    tiny = {"model": "wrn-10-1", "image_size": 16, "cutout": 8, "batch_size": 4, "device": "cpu", "progress": False}
    with stopping_after_a_checkpoint(), pytest.raises(KeyboardInterrupt):
        search("imagefolder", name="run", output=tmp_path, data_dir=image_tree, epochs=2, **tiny)
    index_path = tmp_path / "run.checkpoint" / "checkpoint.json"
    index = json.loads(index_path.read_text())
    del index["settings"]["export"]  # as written before the setting existed
    index_path.write_text(json.dumps(index))
    from dada_transforms.search.settings import SearchInputError

    with pytest.raises(SearchInputError, match="other settings \\(export: 'top-k' there, 'weighted' now\\)"):
        search("imagefolder", name="run", output=tmp_path, data_dir=image_tree, epochs=2, export="weighted", resume=True, **tiny)
    result = search("imagefolder", name="run", output=tmp_path, data_dir=image_tree, epochs=2, resume=True, **tiny)
    assert result.policy.sampling_weights is None and [e["epoch"] for e in result.policy.metadata["history"]] == [1, 2]


def test_model_card_says_how_a_weighted_policy_chooses():
    from dada_transforms.model_card import model_card

    card = model_card(Policy.from_list(MARKED, name="marked", sampling_weights=WEIGHTS), "org/marked")
    assert "version 2" in card and "chosen with its sampling probability" in card and "| 0.4000 |" in card
    assert "chosen uniformly at random" in model_card(load_policy("cifar10"), "org/cifar10")
