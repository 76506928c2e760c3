"""Hostile and careless input: bounded sizes, wrong types, strict JSON, terminal escapes, odd paths.

Every error is a ``ValueError`` naming the problem (in Python) or one line on stderr
with exit status 2 (on the command line, checked through the console script).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dada_transforms import DADA, Policy, list_presets, load_policy
from dada_transforms.cli import main
from dada_transforms.grid import MAX_GRID_PIXELS, make_grid
from dada_transforms.policy import MAX_OPERATIONS_PER_SUB_POLICY, MAX_POLICY_FILE_BYTES, MAX_SUB_POLICIES

ROTATE = {"op": "Rotate", "probability": 0.5, "magnitude": 0.5}


def policy_text(sub_policies, **fields) -> str:
    return json.dumps({"format": "dada-policy", "version": 1, **fields, "sub_policies": sub_policies})


def strict_json(text: str):
    """Parse as standard JSON: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise AssertionError(f"{constant} written into JSON")

    return json.loads(text, parse_constant=refuse)


# -- sizes --------------------------------------------------------------------------


def test_operations_per_sub_policy_are_bounded():
    ok = Policy.from_list([[("Rotate", 0.5, 0.5)] * MAX_OPERATIONS_PER_SUB_POLICY])
    assert len(ok[0]) == MAX_OPERATIONS_PER_SUB_POLICY
    with pytest.raises(ValueError, match=f"sub-policy 0: a sub-policy has {MAX_OPERATIONS_PER_SUB_POLICY + 1} operations; the limit is {MAX_OPERATIONS_PER_SUB_POLICY}"):
        Policy.from_list([[("Rotate", 0.5, 0.5)] * (MAX_OPERATIONS_PER_SUB_POLICY + 1)])
    with pytest.raises(ValueError, match="a sub-policy has 20000 operations; the limit is"):
        Policy.from_json(policy_text([[ROTATE] * 20000]))


def test_sub_policies_per_policy_are_bounded():
    assert len(Policy.from_list([[("Invert", 0.5, 0.0)]] * MAX_SUB_POLICIES)) == MAX_SUB_POLICIES
    with pytest.raises(ValueError, match=f"a policy has {MAX_SUB_POLICIES + 1} sub-policies; the limit is {MAX_SUB_POLICIES}"):
        DADA([[("Invert", 0.5, 0.0)]] * (MAX_SUB_POLICIES + 1))
    with pytest.raises(ValueError, match="a policy has 1000000 sub-policies"):
        Policy.from_dict({"format": "dada-policy", "version": 1, "sub_policies": [[ROTATE]] * 10**6})


def test_policy_files_are_bounded_in_size(tmp_path):
    padding = MAX_POLICY_FILE_BYTES - len(policy_text([[ROTATE]], description=""))
    fits, too_big = tmp_path / "fits.json", tmp_path / "too-big.json"
    fits.write_text(policy_text([[ROTATE]], description="x" * padding))
    too_big.write_text(policy_text([[ROTATE]], description="x" * (padding + 1)))
    assert fits.stat().st_size == MAX_POLICY_FILE_BYTES
    assert len(load_policy(str(fits))) == 1
    with pytest.raises(ValueError, match=f"policy file '.*too-big.json' is larger than the limit of {MAX_POLICY_FILE_BYTES} bytes"):
        load_policy(str(too_big))


# -- types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        ({"sub_policies": [[{"op": ["Rotate"], "probability": 0.5, "magnitude": 0.5}]]}, "'op' must be a string naming an operation, got ['Rotate']"),
        ({"sub_policies": [[{"op": 7, "probability": 0.5, "magnitude": 0.5}]]}, "'op' must be a string naming an operation, got 7"),
        ({"sub_policies": [[{"op": "Rotate", "probability": "0.5", "magnitude": 0.5}]]}, "Rotate probability must be a number in [0, 1], got '0.5'"),
        ({"sub_policies": [[{"op": "Rotate", "probability": 0.5, "magnitude": None}]]}, "Rotate magnitude must be a number in [0, 1], got None"),
        ({"sub_policies": [[{"op": "Rotate", "probability": True, "magnitude": 0.5}]]}, "Rotate probability must be a number in [0, 1], got True"),
        ({"sub_policies": {"0": [ROTATE]}}, "'sub_policies' must be a list of sub-policies, got {'0':"),
        ({"sub_policies": "Rotate"}, "'sub_policies' must be a list of sub-policies, got 'Rotate'"),
        ({"sub_policies": [ROTATE]}, "sub-policy 0 must be a list of operations, got {'op': 'Rotate'"),
        ({"sub_policies": [[ROTATE]], "name": 5}, "'name' must be a string, got 5"),
        ({"sub_policies": [[ROTATE]], "metadata": [1]}, "'metadata' must be an object, got [1]"),
        ({"sub_policies": [[ROTATE]], "format": ["dada-policy"]}, "'format' must be 'dada-policy', got ['dada-policy']"),
        ({"sub_policies": [[ROTATE]], "version": True}, "'version' must be an integer, got True"),
        ({"sub_policies": [[ROTATE]], "version": 1.0}, "'version' must be an integer, got 1.0"),
        ({"sub_policies": [[ROTATE]], "version": "1"}, "'version' must be an integer, got '1'"),
        ({"sub_policies": [[ROTATE]], "version": 3}, "unsupported policy format version 3"),
    ],
)
def test_every_wrong_type_is_a_value_error_naming_the_field(data, message):
    document = {"format": "dada-policy", "version": 1, **data}
    with pytest.raises(ValueError) as error:
        Policy.from_dict(document)
    assert message in str(error.value)
    with pytest.raises(ValueError, match="invalid policy JSON: "):
        Policy.from_json(json.dumps(document))


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"format": "dada-policy", "version": 1, "version": 1, "sub_policies": [[%s]]}' % json.dumps(ROTATE), "duplicate key 'version'"),
        ('{"format": "dada-policy", "version": 1, "sub_policies": [[{"op": "Rotate", "op": "Invert", "probability": 1, "magnitude": 0}]]}', "duplicate key 'op'"),
        ('{"format": "dada-policy", "version": 1, "sub_policies": [[%s]], "metadata": {"loss": NaN}}' % json.dumps(ROTATE), "NaN is not JSON"),
        ('{"format": "dada-policy", "version": 1, "sub_policies": [[%s]], "metadata": {"x": -Infinity}}' % json.dumps(ROTATE), "-Infinity is not JSON"),
        ('{"format": "dada-policy", "version": 1, "sub_policies": [[%s]], "metadata": {"x": 1e999}}' % json.dumps(ROTATE), "1e999 is not JSON"),
        ('{"format": "dada-policy", "version": 1, "sub_policies": [[%s]], "metadata": %s}' % (json.dumps(ROTATE), "[" * 100000), "nested too deeply"),
    ],
    ids=["duplicate-top-level-key", "duplicate-operation-key", "nan", "infinity", "overflow", "deep-nesting"],
)
def test_policy_files_are_strict_json(tmp_path, text, message):
    path = tmp_path / "policy.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"invalid policy file '{re.escape(str(path))}': .*{re.escape(message)}"):
        load_policy(str(path))


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps({"format": "dada-policy", "version": 1, "description": "caf\u00e9", "sub_policies": [[ROTATE]]}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match=r"invalid policy file '.*latin1.json': not UTF-8 text \(byte 0xe9 at offset"):
        DADA(str(path))


@pytest.mark.parametrize("number", [np.float32(0.5), np.float64(0.5), np.float16(0.5), Fraction(1, 2)])
def test_real_numbers_of_any_numeric_type_are_accepted(number):
    policy = Policy.from_list([[("Rotate", number, number), ("Invert", np.int64(1), np.int8(0))]])
    rotate, invert = policy[0]
    assert (rotate.probability, rotate.magnitude, invert.probability, invert.magnitude) == (0.5, 0.5, 1.0, 0.0)
    assert all(type(value) is float for value in (rotate.probability, rotate.magnitude, invert.probability))
    assert Policy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize("value", [np.bool_(True), "0.5", None, [0.5], np.array([0.5, 0.5])])
def test_things_that_are_not_real_numbers_are_refused(value):
    with pytest.raises(ValueError, match="Rotate probability must be a number in"):
        Policy.from_list([[("Rotate", value, 0.5)]])


def test_metadata_is_written_as_standard_json(tmp_path):
    metadata = {
        "history": [{"epoch": np.int64(1), "loss": float("nan")}, {"epoch": 2, "loss": np.float32(0.25)}],
        "bounds": (float("inf"), -float("inf")),
        "weights": np.array([0.5, 0.25]).tolist(),
    }
    policy = Policy(Policy.from_list([[("Rotate", 0.5, 0.5)]]).sub_policies, name="m", metadata=metadata)
    written = strict_json(policy.to_json(tmp_path / "m.json"))
    assert written["metadata"] == {
        "history": [{"epoch": 1, "loss": None}, {"epoch": 2, "loss": 0.25}],
        "bounds": [None, None],
        "weights": [0.5, 0.25],
    }
    assert Policy.from_json(tmp_path / "m.json").metadata == written["metadata"]
    with pytest.raises(ValueError, match=r"metadata\['path'\] is not JSON data: .*PosixPath"):
        Policy(policy.sub_policies, metadata={"path": tmp_path}).to_json()
    assert [path.name for path in tmp_path.iterdir()] == ["m.json"]


# -- the command line, through the console script ---------------------------------------


def run_all(commands: list[list[str]], env: dict[str, str], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the commands concurrently (each start of the script imports torch) and return their results."""
    processes = [
        subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    results = []
    for command, process in zip(commands, processes):
        stdout, stderr = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return results


def png_header_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb's opening."""
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_hostile_input_through_the_console_script(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    escapes = Policy(
        Policy.from_list([[("Rotate", 0.5, 0.5)]]).sub_policies,
        name="\x1b]0;pwned\x07title",
        description="clears the screen\x1b[2J\x1b[H and hides \u202etext",
    )
    escapes.to_json(tmp_path / "escapes.json")
    (tmp_path / "op-list.json").write_text(policy_text([[{**ROTATE, "op": ["Rotate"]}]]))
    Policy.from_list([[("Invert", 1.0, 0.0)]], name="mine").to_json(presets / "mine.json")
    Policy.from_list([[("Invert", 1.0, 0.0)]], name="imagenet").to_json(presets / "imagenet.json")
    (presets / "broken.json").write_text("{not json")
    (presets / "folder.json").mkdir()
    (tmp_path / "bomb.png").write_bytes(png_header_claiming(20000, 20000))
    env = {**os.environ, "DADA_PRESET_DIR": str(presets), "HF_HUB_OFFLINE": "1"}
    script = ["dada-transforms"]
    commands = {
        "op-list": script + ["show", "op-list.json"],
        "escapes": script + ["show", "escapes.json"],
        "list": script + ["list"],
        "bomb": script + ["grid", "imagenet", "bomb.png", "-o", "out.png"],
        "tile-size": script + ["grid", "imagenet", "--tile-size", "100000", "-o", "out.png"],
        "module": [sys.executable, "-m", "dada_transforms", "show", "imagenett"],
    }
    results = dict(zip(commands, run_all(list(commands.values()), env, tmp_path)))

    errors = {
        "op-list": "invalid policy file 'op-list.json': sub-policy 0: 'op' must be a string naming an operation, got ['Rotate']",
        "bomb": "cannot read image 'bomb.png': Image size (400000000 pixels) exceeds limit",
        "tile-size": "tile_size must be an integer in [64, 1024], got 100000",
        "module": "unknown preset 'imagenett' (did you mean 'imagenet'",
    }
    for key, message in errors.items():
        result = results[key]
        assert result.returncode == 2, (key, result.stderr)
        assert result.stderr.startswith("dada-transforms: error: "), (key, result.stderr)
        assert message in result.stderr, (key, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == "", key

    shown = results["escapes"]
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout and "\u202e" not in shown.stdout
    assert shown.stdout.startswith("\\x1b]0;pwned\\x07title: 1 sub-policies of 1 operations\n")
    assert "clears the screen\\x1b[2J\\x1b[H and hides \\u202etext\n" in shown.stdout

    listed = results["list"]
    assert listed.returncode == 0, listed.stderr
    table, problems = listed.stdout.split("\nuser preset files that do not load by name:\n")
    assert [line.split()[:2] for line in table.splitlines()[1:] if line.strip()] == [
        ["cifar10", "built-in"], ["cifar100", "built-in"], ["imagenet", "built-in"], ["svhn", "built-in"], ["mine", "user"],
    ]
    problems = problems.split("\n\n")[0].splitlines()
    assert problems[0].startswith(f"  invalid policy file '{presets / 'broken.json'}': Expecting property name")
    assert problems[1] == f"  cannot read policy file '{presets / 'folder.json'}': not a regular file"
    assert problems[2] == f"  '{presets / 'imagenet.json'}' is shadowed by the built-in preset 'imagenet': load it by its path"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bomb.png", "escapes.json", "op-list.json", "presets"]


# -- the same limits in Python ----------------------------------------------------------------------


def test_list_presets_leaves_out_what_does_not_load(tmp_path, monkeypatch):
    monkeypatch.setenv("DADA_PRESET_DIR", str(tmp_path))
    Policy.from_list([[("Invert", 1.0, 0.0)]]).to_json(tmp_path / "good.json")
    (tmp_path / "bad.json").write_text('{"format": "dada-policy"}')
    (tmp_path / "dir.json").mkdir()
    Policy.from_list([[("Invert", 1.0, 0.0)]]).to_json(tmp_path / "svhn.json")
    assert list_presets() == ["cifar10", "cifar100", "imagenet", "svhn", "good"]
    assert len(load_policy("svhn")) == 25
    with pytest.raises(ValueError, match="invalid policy file '.*bad.json': 'version' must be an integer, got None"):
        load_policy("bad")


def test_only_regular_files_are_read_as_policies(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "fifo.json")  # opening it would block until someone writes
    (tmp_path / "folder.json").mkdir()
    for name in ("fifo.json", "folder.json"):
        with pytest.raises(ValueError, match=f"cannot read policy file '.*{name}': not a regular file"):
            DADA(str(tmp_path / name))
    with pytest.raises(ValueError, match="cannot read policy file '/dev/zero': not a regular file"):
        Policy.from_json("/dev/zero")
    monkeypatch.setenv("DADA_PRESET_DIR", str(tmp_path))
    assert list_presets() == ["cifar10", "cifar100", "imagenet", "svhn"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("x" * 300, "unknown preset 'xxxx"),
        ("x" * 300 + ".json", "cannot use 'xxxx"),
        ("~nouser-dada/policy.json", "cannot expand '~' in '~nouser-dada/policy.json'"),
    ],
)
def test_odd_names_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        DADA(spec)


def test_a_bad_preset_directory_variable_is_named(monkeypatch):
    monkeypatch.setenv("DADA_PRESET_DIR", "~nouser-dada/presets")
    with pytest.raises(ValueError, match="DADA_PRESET_DIR: cannot expand '~' in '~nouser-dada/presets'"):
        list_presets()
    assert len(load_policy("cifar10")) == 25  # built-in presets still load


@pytest.mark.parametrize(
    "options, message",
    [
        ({"tile_size": 1025}, "tile_size must be an integer in [64, 1024], got 1025"),
        ({"columns": 10**30}, f"pixels, over the limit of {MAX_GRID_PIXELS:,}: use fewer samples or columns"),
        ({"samples": 256, "tile_size": 1024}, "the grid would be "),
        ({"seed": 2**64}, f"seed must be an integer in [0, {2**64 - 1}], got {2**64}"),
    ],
)
def test_grid_sizes_are_bounded_before_any_work(options, message):
    with pytest.raises(ValueError) as error:
        make_grid("imagenet", "no such image.png", **options)  # the image is not even opened
    assert message in str(error.value)


def test_grid_refuses_huge_images_from_their_header(tmp_path):
    (tmp_path / "big.png").write_bytes(png_header_claiming(10000, 10000))
    with pytest.raises(ValueError, match=r"image '.*big.png' is 10000x10000 pixels, over the limit of 67,108,864"):
        make_grid("imagenet", tmp_path / "big.png", samples=1, tile_size=64)


@pytest.mark.parametrize(
    "args, message",
    [
        (["grid", "imagenet", "--columns", "1000000000"], "the grid would be 166000000006x"),
        (["grid", "imagenet", "--samples", "1", "-o", "~nouser-dada/grid.png"], "cannot expand '~' in '~nouser-dada/grid.png'"),
        (["grid", "imagenet", "--samples", "1", "-o", "x" * 300 + ".png"], "cannot write 'xxxx"),
        (["grid", "imagenet", "~nouser-dada/photo.jpg"], "cannot expand '~' in '~nouser-dada/photo.jpg'"),
        (["show", "~nouser-dada/policy.json"], "cannot expand '~' in '~nouser-dada/policy.json'"),
        (["show", "x" * 300 + ".json"], "cannot use 'xxxx"),
        (["push", "x" * 300 + ".json", "me/policy"], "cannot use 'xxxx"),
    ],
    ids=["columns", "output-no-user", "output-too-long", "image-no-user", "show-no-user", "show-too-long", "push-too-long"],
)
def test_more_command_line_errors_exit_2_and_leave_no_file(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("dada-transforms: error: ") and message in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""
    assert list(tmp_path.iterdir()) == []
