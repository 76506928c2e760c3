"""The ``dada-transforms`` command: list, show, grid, push and errors.

The main paths run through the installed console script; variations call
``dada_transforms.cli.main`` (what the script runs) in this process, because each
start of the script spends seconds importing torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from safetensors.torch import save_file

import dada_transforms.hub
from dada_transforms import Policy, __version__, load_policy
from dada_transforms.cli import main
from dada_transforms.grid import GridLayout
from dada_transforms.ops import OPERATIONS
from dada_transforms.search import AugmentationParameters

BUILT_INS = ("cifar10", "cifar100", "imagenet", "svhn")


def run(*args: str, preset_dir: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DADA_PRESET_DIR": str(preset_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["dada-transforms", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def preset_dir(tmp_path) -> Path:
    folder = tmp_path / "presets"
    folder.mkdir()
    Policy.from_list([[("Equalize", 0.9, 0.0), ("Posterize", 0.5, 0.5)]], name="mine").to_json(folder / "mine.json")
    return folder


def test_list_shows_the_built_ins_and_a_user_preset_with_their_sources(preset_dir):
    result = run("list", preset_dir=preset_dir)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line.strip()}
    for name in BUILT_INS:
        assert rows[name][1] == "built-in" and rows[name][2].endswith(f"{name}.json")
    assert rows["mine"][1:] == ["user", str(preset_dir / "mine.json")]
    assert f"user preset directory: {preset_dir}" in result.stdout


def test_show_prints_every_sub_policy_with_real_arguments(preset_dir):
    result = run("show", "imagenet", preset_dir=preset_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imagenet: 25 sub-policies of 2 operations\n")
    policy = load_policy("imagenet")
    table = result.stdout.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["sub-policy", "operation", "(argument)", "probability", "magnitude"]
    assert len(table) == 1 + 2 * 25
    for index, sub_policy in enumerate(policy):
        for position, operation in enumerate(sub_policy):
            line = table[1 + 2 * index + position]
            assert line.split()[0] == str(index + 1) if position == 0 else line.startswith(" ")
            assert OPERATIONS[operation.op].describe(operation.magnitude) in line
            assert line.split()[-2:] == [f"{operation.probability:.2f}", f"{operation.magnitude:.2f}"]
    assert "Rotate +/-13.0 deg" in result.stdout


def test_show_a_user_preset_and_a_policy_file(preset_dir, monkeypatch, capsys):
    monkeypatch.setenv("DADA_PRESET_DIR", str(preset_dir))
    assert main(["show", "mine"]) == 0
    by_name = capsys.readouterr().out
    assert "Equalize" in by_name and "Posterize keep 6 bits" in by_name
    monkeypatch.delenv("DADA_PRESET_DIR")
    assert main(["show", str(preset_dir / "mine.json")]) == 0
    assert capsys.readouterr().out == by_name


def test_an_unknown_preset_exits_2_with_did_you_mean_and_no_traceback(preset_dir):
    result = run("show", "imagenett", preset_dir=preset_dir)
    assert result.returncode == 2
    assert "dada-transforms: error: unknown preset 'imagenett' (did you mean 'imagenet'" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["show", "missing.json"], "policy file 'missing.json' does not exist"),
        (["show", "hf-hub:org"], "a Hub repository id must look like 'org/name'"),
        (["show", "hf-hub:org/name@"], "empty revision after '@' in Hub preset 'org/name@'"),
    ],
)
def test_user_errors_return_2_with_a_message(args, message, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert f"dada-transforms: error: {message}" in captured.err and captured.out == ""


def test_version_and_missing_command(preset_dir):
    assert run("--version", preset_dir=preset_dir).stdout.strip() == f"dada-transforms {__version__}"
    with pytest.raises(SystemExit) as exit:
        main([])
    assert exit.value.code == 2


def test_grid_with_only_a_preset_writes_a_png_of_the_demo_photo(preset_dir, tmp_path):
    result = run("grid", "imagenet", "--samples", "7", preset_dir=preset_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "grid.png") as picture:
        assert picture.format == "PNG"
        layout = GridLayout(8, 4, 160, 2)
        assert picture.size == layout.size
        tiles = [picture.convert("RGB").crop(layout.tile_box(index)) for index in range(8)]
    assert sum(ImageChops.difference(tile, tiles[0]).getbbox() is not None for tile in tiles[1:]) >= 5
    assert len({tile.tobytes() for tile in tiles}) >= 6
    assert f"wrote grid.png ({layout.size[0]}x{layout.size[1]} px" in result.stdout


def test_grid_of_an_image_file_with_options(preset_dir, tmp_path, make_image, monkeypatch):
    monkeypatch.setenv("DADA_PRESET_DIR", str(preset_dir))
    make_image(120, 90).save(tmp_path / "photo.png")
    options = ["--samples", "5", "--columns", "3", "--tile-size", "64", "--seed", "2"]
    output, again = tmp_path / "out" / "grid.png", tmp_path / "again.png"
    assert main(["grid", "mine", str(tmp_path / "photo.png"), "-o", str(output), *options]) == 0
    assert Image.open(output).size == GridLayout(6, 3, 64, 2).size
    assert main(["grid", "mine", str(tmp_path / "photo.png"), "-o", str(again), *options]) == 0
    assert again.read_bytes() == output.read_bytes()


def test_a_grid_error_through_the_script_leaves_no_file(preset_dir, tmp_path):
    result = run("grid", "imagenet", "--samples", "0", preset_dir=preset_dir, cwd=tmp_path)
    assert result.returncode == 2
    assert "dada-transforms: error: samples must be an integer in [1, 256], got 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["presets"]  # no output, no temporary file


@pytest.mark.parametrize(
    "extra, output_name, message",
    [
        (["nope.jpg"], "grid.png", "cannot read image 'nope.jpg'"),
        ([], "grid.gif", "the output must be a .png, .jpg or .webp file"),
        (["--tile-size", "8"], "grid.png", "tile_size must be an integer in [64, 1024], got 8"),
    ],
)
def test_grid_errors_leave_no_file(tmp_path, monkeypatch, capsys, extra, output_name, message):
    monkeypatch.chdir(tmp_path)
    assert main(["grid", "imagenet", *extra, "-o", output_name]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_push_includes_the_presets_safetensors_sibling(preset_dir, monkeypatch, capsys):
    save_file(AugmentationParameters().tensors(), str(preset_dir / "mine.safetensors"))
    monkeypatch.setenv("DADA_PRESET_DIR", str(preset_dir))
    uploads = []

    class FakeHfApi:
        def __init__(self, **options):
            pass

        def create_repo(self, repo_id, **options):
            return f"https://huggingface.co/{repo_id}"

        def create_commit(self, repo_id, operations, **options):
            uploads.append({op.path_in_repo: op.path_or_fileobj for op in operations})

    monkeypatch.setattr(dada_transforms.hub, "HfApi", FakeHfApi)
    assert main(["push", "mine", "me/mine"]) == 0
    assert "pushed policy.json, policy.safetensors and README.md to https://huggingface.co/me/mine" in capsys.readouterr().out
    (files,) = uploads
    assert files["policy.safetensors"] == (preset_dir / "mine.safetensors").read_bytes()
    assert json.loads(files["policy.json"])["name"] == "mine"

    assert main(["push", "cifar10", "me/c10"]) == 0
    assert set(uploads[1]) == {"policy.json", "README.md"}


def test_push_to_an_invalid_repo_id_is_a_user_error(preset_dir):
    result = run("push", "imagenet", "not a repo", preset_dir=preset_dir)
    assert result.returncode == 2
    assert "dada-transforms: error: a Hub repository id must look like 'org/name'" in result.stderr
    assert "'not a repo'" in result.stderr


def test_grid_to_an_unwritable_path_is_a_user_error(tmp_path, capsys):
    (tmp_path / "taken.png").mkdir()
    assert main(["grid", "imagenet", "--samples", "1", "-o", str(tmp_path / "taken.png")]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["taken.png"]  # no temporary file left


@pytest.mark.parametrize(
    "module, args",
    [
        ("dada_transforms.cli", ["list"]),
        ("dada_transforms.cli", ["show", "imagenet"]),
        ("dada_transforms.cli", ["--help"]),
        ("dada_transforms.search.cli", ["--help"]),
    ],
)
def test_list_show_and_help_answer_without_importing_torch(preset_dir, module, args):
    script = (
        "import contextlib, io, sys\n"
        f"from {module} import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        f"        code = main({args!r})\n"
        "    except SystemExit as stop:\n"
        "        code = stop.code\n"
        "assert code in (0, None), code\n"
        "assert out.getvalue(), 'printed nothing'\n"
        "print(sorted(name for name in sys.modules if name == 'torch' or name.startswith('torch.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"{args} imported {result.stdout.strip()[:200]}"
