"""What a new user tries first: the README's timm snippet on a CPU-only machine, and the command's help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from dada_transforms.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # the snippet's 8 workers on 2 cores
def test_the_readme_timm_loader_snippet_runs_as_written_on_a_cpu(tmp_path, monkeypatch, make_image):
    (snippet,) = [block for block in python_blocks(README.read_text()) if "create_loader" in block]
    root = tmp_path / "train"
    for label in range(2):
        (root / f"class{label}").mkdir(parents=True)
        for index in range(64):
            make_image(12, 10, seed=index + 100 * label).save(root / f"class{label}" / f"{index}.png")
    assert snippet.count('"/path/to/imagenet/train"') == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    namespace: dict = {}
    exec(snippet.replace('"/path/to/imagenet/train"', repr(str(root))), namespace)
    images, labels = namespace["images"], namespace["labels"]
    assert images.shape == (128, 3, 224, 224) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert sorted(labels.tolist()) == [0] * 64 + [1] * 64
    assert "DADA(policy='imagenet'" in repr(namespace["transform"])
    assert "DADA(policy='imagenet'" in repr(namespace["loader"].dataset.transform)


def positional_entries(help_text: str) -> dict[str, str]:
    """The positional arguments of an argparse help text and their help (empty when there is none)."""
    section = help_text.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0]
    entries: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        if re.match(r"  \S", line):
            name, _, text = line.strip().partition("  ")
            entries[name] = text.strip()
        elif re.match(r"    \S", line) and name == "COMMAND":
            continue  # the list of commands under COMMAND
        else:
            entries[name] = (entries[name] + " " + line.strip()).strip()
    return entries


def help_of(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        main([*args, "--help"])
    assert exit.value.code == 0
    return capsys.readouterr().out


def test_every_positional_argument_has_help(capsys):
    top = help_of([], capsys)
    commands = re.findall(r"^    (\w+)  ", top.split("positional arguments:\n", 1)[1], flags=re.MULTILINE)
    assert {"list", "show", "grid", "push"} <= set(commands)
    assert positional_entries(top)["COMMAND"]
    for command in commands:
        text = help_of([command], capsys)
        if "positional arguments:" not in text:
            continue
        for name, description in positional_entries(text).items():
            assert len(description.split()) >= 3, (command, name, description)
