"""The policy model, its JSON format, the published presets and preset resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dada_transforms import DADA, OPERATION_NAMES, Policy, list_presets, load_policy

REFERENCE = Path(__file__).parent / "data" / "dada_published_policies.json"
"""The four policies published with the paper (the authors' numbers at full precision), kept as test data."""


def test_operation_names_are_the_papers_fifteen_in_order():
    assert OPERATION_NAMES == (
        "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast", "Invert", "Equalize",
        "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness", "Cutout",
    )


def test_presets_are_the_published_policies_number_for_number():
    published = json.loads(REFERENCE.read_text())["policies"]
    assert set(published) == {"cifar10", "cifar100", "svhn", "imagenet"} and set(published) <= set(list_presets())
    for name, sub_policies in published.items():
        policy = load_policy(name)
        assert policy.name == name
        assert [[(o.op, o.probability, o.magnitude) for o in sub] for sub in policy] == [
            [(o["op"], o["probability"], o["magnitude"]) for o in sub] for sub in sub_policies
        ]


def test_presets_have_25_sub_policies_of_two_operations():
    for name in ("cifar10", "cifar100", "svhn", "imagenet"):
        policy = DADA(name).policy
        assert len(policy) == 25 and all(len(sub) == 2 for sub in policy)
        for sub in policy:
            for operation in sub:
                assert operation.op in OPERATION_NAMES
                assert 0 <= operation.probability <= 1 and 0 <= operation.magnitude <= 1


def test_json_round_trip(tmp_path):
    policy = Policy.from_list([[("Rotate", 0.6, 0.3), ("Invert", 0.2, 0.0)], [("ShearX", 0.5, 0.7)]], name="mine")
    path = tmp_path / "mine.json"
    text = policy.to_json(path)
    data = json.loads(path.read_text())
    assert data["format"] == "dada-policy" and data["version"] == 1
    assert data["sub_policies"][0][0] == {"op": "Rotate", "probability": 0.6, "magnitude": 0.3}
    assert Policy.from_json(path) == policy == Policy.from_json(text)
    assert DADA(str(path)).policy == policy
    assert DADA(path).policy == policy
    assert [p.name for p in tmp_path.iterdir()] == ["mine.json"]  # no temporary file left behind


def test_literal_policy_and_attributes():
    transform = DADA([[("Rotate", 0.6, 0.3), ("Invert", 0.2, 0.0)], [("ShearX", 0.5, 0.7), ("Color", 0.4, 0.9)]])
    first = list(transform.policy)[0]
    assert [(o.op, o.probability, o.magnitude) for o in first] == [("Rotate", 0.6, 0.3), ("Invert", 0.2, 0.0)]


@pytest.mark.parametrize(
    "policy, message",
    [
        ([[("Rotat", 0.5, 0.5)]], r"unknown operation 'Rotat' \(did you mean 'Rotate'"),
        ([[("Rotate", 1.2, 0.5)]], "Rotate probability 1.2 is outside"),
        ([[("Rotate", 0.5, -0.1)]], "Rotate magnitude -0.1 is outside"),
        ([[("Rotate", 0.5, float("nan"))]], "must be a number in"),
        ([[("Rotate", "high", 0.5)]], "must be a number in"),
        ([], "at least one sub-policy"),
        ([[]], "at least one operation"),
        ([[("Rotate", 0.5)]], r"must be \(op, probability, magnitude\)"),
        ("not a list of lists", "unknown preset"),
    ],
)
def test_bad_policies_name_the_value(policy, message):
    with pytest.raises(ValueError, match=message):
        DADA(policy)


def test_errors_say_which_sub_policy():
    with pytest.raises(ValueError, match="sub-policy 1: Color probability 2 is outside"):
        DADA([[("Rotate", 0.5, 0.5)], [("Color", 2, 0.5)]])


def test_unknown_preset_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown preset 'imagnet' \(did you mean 'imagenet'.*known presets: "):
        DADA("imagnet")
    with pytest.raises(ValueError, match="cifar10"):
        DADA("cifar")


def test_broken_policy_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        DADA(str(broken))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "dada-policy", "version": 1, "sub_policies": [[{"op": "Blur", "probability": 1, "magnitude": 1}]]}))
    with pytest.raises(ValueError, match=r"wrong.json.*unknown operation 'Blur'"):
        DADA(str(wrong))
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"format": "dada-policy", "version": 99, "sub_policies": []}))
    with pytest.raises(ValueError, match="unsupported policy format version 99"):
        load_policy(str(future))
    with pytest.raises(ValueError, match="does not exist"):
        DADA(str(tmp_path / "missing.json"))


def test_user_presets_load_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("DADA_PRESET_DIR", str(tmp_path))
    Policy.from_list([[("Equalize", 0.9, 0.1)]], name="house-style").to_json(tmp_path / "house-style.json")
    assert "house-style" in list_presets()
    assert DADA("house-style").policy.name == "house-style"
    # a user preset never shadows a built-in one
    Policy.from_list([[("Equalize", 0.9, 0.1)]], name="imagenet").to_json(tmp_path / "imagenet.json")
    assert len(load_policy("imagenet")) == 25
