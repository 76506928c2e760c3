"""Hub presets: loading from a locally populated Hugging Face cache offline, and pushing through a fake HfApi.

Loading runs the real ``huggingface_hub.hf_hub_download`` code path with
``HF_HUB_OFFLINE`` on (in this process by patching ``huggingface_hub.constants``,
and in subprocesses through the environment), so no network is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from PIL import Image
from safetensors.torch import save, save_file

from dada_transforms import DADA, Policy, load_policy
from dada_transforms.hub import load_hub_parameters, load_hub_policy, push_preset
from dada_transforms.search import AugmentationParameters

COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40
POLICY_1 = Policy.from_list([[("Rotate", 0.5, 0.75), ("Invert", 0.25, 0.0)]], name="first")
POLICY_2 = Policy.from_list(
    [[("Solarize", 0.5, 0.5)], [("Cutout", 1.0, 0.5), ("ShearX", 0.3, 1.0)]], name="second"
)


def add_commit(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)) -> None:
    """Lay out files of one commit as huggingface_hub's cache does: blobs, a snapshot of links, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


def record_absent(cache: Path, repo_id: str, commit: str, name: str) -> None:
    """What huggingface_hub writes when the Hub answered that a file does not exist at a commit."""
    marker = cache / f"models--{repo_id.replace('/', '--')}" / ".no_exist" / commit / name
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, offline, used by huggingface_hub in this process."""
    folder = tmp_path / "hub"
    folder.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return folder


def policy_bytes(policy: Policy) -> bytes:
    return policy.to_json().encode()


def search_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Tensors shaped as dada-search saves them, with random values."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(value.shape, generator=generator) for name, value in AugmentationParameters().tensors().items()}


def test_dada_loads_a_cached_hub_preset_offline(cache):
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_2)})
    transform = DADA("hf-hub:org/name")
    assert transform.policy == POLICY_2
    assert load_policy("hf-hub:org/name") == POLICY_2
    image = Image.new("RGB", (24, 20), (200, 100, 50))
    assert transform(image).size == (24, 20)


def test_revision_selects_a_commit_by_hash_or_by_ref(cache):
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1)}, refs=("v1",))
    add_commit(cache, "org/name", COMMIT_2, {"policy.json": policy_bytes(POLICY_2)}, refs=("main",))
    assert load_hub_policy("org/name") == POLICY_2
    assert load_hub_policy("org/name@main") == POLICY_2
    assert load_hub_policy("org/name@v1") == POLICY_1
    assert load_hub_policy(f"org/name@{COMMIT_1}") == POLICY_1
    assert DADA(f"hf-hub:org/name@{COMMIT_1}").policy == POLICY_1


def test_an_uncached_preset_offline_names_the_repo_and_says_it_is_not_cached(cache):
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1)})
    with pytest.raises(ValueError, match=r"'org/missing' is not cached and HF_HUB_OFFLINE=1") as error:
        DADA("hf-hub:org/missing")
    assert "hf download org/missing" in str(error.value)
    with pytest.raises(ValueError, match=r"'org/name' at revision 'v9' is not cached"):
        load_hub_policy("org/name@v9")


@pytest.mark.parametrize(
    "content, problem",
    [
        (b'{"format": "dada-policy", "version": 1, "sub_policies": [[{"op": "Rotat", "probability": 0.5, "magnitude": 0.5}]]}', "unknown operation 'Rotat'"),
        (b'{"format": "dada-policy", "version": 1, "sub_policies": [[["Rotate", 1.5, 0.5]]]}', "probability 1.5 is outside"),
        (b"__import__('os').system('echo pwned')", "Expecting value"),
        (b'{"format": "pickle"}', "'format' must be 'dada-policy'"),
    ],
)
def test_a_bad_policy_json_is_a_clear_error_naming_the_repo(cache, content, problem):
    add_commit(cache, "org/bad", COMMIT_1, {"policy.json": content})
    with pytest.raises(ValueError, match=r"invalid policy.json in Hub repository 'org/bad'") as error:
        load_hub_policy("org/bad")
    assert problem in str(error.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("org", "must look like 'org/name' (letters, digits, '-', '_', '.'; no '--' or '..'), got 'org'"),
        ("org/na me", "got 'org/na me'"),
        ("a/b/c", "got 'a/b/c'"),
        ("org--x/name", "got 'org--x/name'"),
        ("org/name@", "empty revision after '@' in Hub preset 'org/name@'"),
    ],
)
def test_a_malformed_hub_spec_is_rejected_with_its_value(spec, message):
    with pytest.raises(ValueError) as error:
        DADA(f"hf-hub:{spec}")
    assert message in str(error.value)


def test_parameters_are_read_with_safetensors(cache):
    tensors = search_tensors()
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1), "policy.safetensors": save(tensors)})
    loaded = load_hub_parameters("org/name")
    assert loaded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value)


def test_parameters_absent_from_the_repo_are_none(cache):
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1)})
    record_absent(cache, "org/name", COMMIT_1, "policy.safetensors")
    assert load_hub_parameters("org/name") is None


def test_uncached_parameters_offline_are_an_error(cache):
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1)})
    with pytest.raises(ValueError, match="policy.safetensors of Hub repository 'org/name' is not cached"):
        load_hub_parameters("org/name")


class _CreatesFileWhenUnpickled:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_a_pickle_posing_as_safetensors_is_refused_not_unpickled(cache, tmp_path):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_CreatesFileWhenUnpickled(marker))
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1), "policy.safetensors": payload})
    with pytest.raises(ValueError, match="invalid policy.safetensors in Hub repository 'org/name'"):
        load_hub_parameters("org/name")
    assert not marker.exists()


# -- push ------------------------------------------------------------------------


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi at the network boundary; records the calls and uploaded files."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.commits: list[dict[str, bytes]] = []

    def create_repo(self, repo_id, **options):
        self.calls.append(("create_repo", {"repo_id": repo_id, **options}))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **options):
        self.calls.append(("create_commit", {"repo_id": repo_id, **options}))
        self.commits.append({op.path_in_repo: _content(op.path_or_fileobj) for op in operations})


def _content(source) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


SEARCHED = Policy(
    Policy.from_list([[("Rotate", 0.6, 0.95), ("Color", 0.4, 0.25)], [("TranslateY", 0.7, 0.1), ("Posterize", 0.3, 0.5)]]).sub_policies,
    name="my-search",
    description="DADA policy searched by dada-search on cifar10 with wrn-40-2",
    metadata={
        "search": {"dataset": "cifar10", "model": "wrn-40-2", "epochs": 20, "temperature": 0.5},
        "searched_images": 4000,
        "history": [{"epoch": 20, "loss": 0.4321, "accuracy": 0.85}],
        "sub_policy_weights": [0.0125, 0.0099],
    },
)


def test_push_uploads_policy_parameters_and_model_card_in_one_commit(tmp_path):
    parameters = tmp_path / "my-search.safetensors"
    save_file(search_tensors(), str(parameters))
    api = FakeHfApi()
    url = push_preset(SEARCHED, "me/my-search", safetensors_path=parameters, private=True, token="tok", api=api)
    assert url == "https://huggingface.co/me/my-search"
    assert [name for name, _ in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[0][1]["private"] is True and api.calls[0][1]["exist_ok"] is True
    assert api.calls[0][1]["token"] == "tok" and api.calls[1][1]["token"] == "tok"
    (files,) = api.commits
    assert set(files) == {"policy.json", "policy.safetensors", "README.md"}
    round_trip = Policy.from_json(files["policy.json"].decode())
    assert round_trip == SEARCHED and round_trip.metadata == SEARCHED.metadata
    assert files["policy.safetensors"] == parameters.read_bytes()

    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: dada-transforms\n")
    assert "- data-augmentation\n" in card and "- dada\n" in card
    assert "# my-search: a DADA data augmentation policy" in card
    assert "| 1 | 0.0125 | Rotate +/-27.0 deg | 0.60 | 0.95 |" in card
    assert "|  |  | Color x0.55 | 0.40 | 0.25 |" in card
    assert "| 2 | 0.0099 | TranslateY +/-0.360 x height | 0.70 | 0.10 |" in card
    assert "| dataset | cifar10 |" in card and "| model | wrn-40-2 |" in card
    assert "| searched images | 4000 |" in card and "| last epoch's accuracy | 0.85 |" in card
    assert 'DADA("hf-hub:me/my-search")' in card
    assert "--aa dada-hf-hub:me/my-search" in card
    assert 'auto_augment="dada-hf-hub:me/my-search"' in card
    assert "policy.safetensors" in card


def test_push_a_builtin_preset_by_name_without_parameters():
    api = FakeHfApi()
    push_preset("cifar10", "me/cifar10", api=api)
    (files,) = api.commits
    assert set(files) == {"policy.json", "README.md"}
    assert Policy.from_json(files["policy.json"].decode()) == load_policy("cifar10")
    card = files["README.md"].decode()
    assert card.count("\n| ") == 2 + 2 * 25  # header, alignment row, one row per operation
    assert "## Search settings" not in card and "policy.safetensors" not in card


def test_a_pushed_preset_loads_back_from_the_hub_cache(cache, tmp_path):
    parameters = tmp_path / "p.safetensors"
    save_file(search_tensors(1), str(parameters))
    api = FakeHfApi()
    push_preset(SEARCHED, "me/my-search", safetensors_path=parameters, api=api)
    add_commit(cache, "me/my-search", COMMIT_2, api.commits[0])
    assert DADA("hf-hub:me/my-search").policy == SEARCHED
    assert torch.equal(load_hub_parameters("me/my-search")["alpha"], search_tensors(1)["alpha"])


@pytest.mark.parametrize("repo_id", ["no-namespace", "me/bad name", "me/x/y", "me/..", "", None])
def test_push_to_an_invalid_repo_id_fails_before_any_upload(repo_id):
    api = FakeHfApi()
    with pytest.raises(ValueError, match="a Hub repository id must look like 'org/name'") as error:
        push_preset(POLICY_1, repo_id, api=api)
    assert repr(repo_id) in str(error.value)
    assert api.calls == []


def test_push_refuses_a_parameters_file_that_is_not_safetensors(tmp_path):
    bogus = tmp_path / "weights.safetensors"
    bogus.write_bytes(b"not safetensors at all")
    api = FakeHfApi()
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        push_preset(POLICY_1, "me/p", safetensors_path=bogus, api=api)
    with pytest.raises(ValueError, match="cannot read parameters file"):
        push_preset(POLICY_1, "me/p", safetensors_path=tmp_path / "missing.safetensors", api=api)
    assert api.calls == []


# -- through the installed console script, configured by the environment -------------------


def hub_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1")
    return env


def test_console_script_shows_a_cached_hub_preset_and_reports_a_miss(tmp_path):
    add_commit(tmp_path / "hub", "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_2)})
    env = hub_env(tmp_path)
    shown = subprocess.run(["dada-transforms", "show", "hf-hub:org/name"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "second: 2 sub-policies of 1 or 2 operations" in shown.stdout
    assert "Solarize invert levels >= 128" in shown.stdout and "ShearX +/-0.300" in shown.stdout

    missing = subprocess.run(["dada-transforms", "show", "hf-hub:org/other"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2
    assert "dada-transforms: error: policy.json of Hub repository 'org/other' is not cached" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_console_script_push_offline_is_a_clear_error(tmp_path):
    result = subprocess.run(
        ["dada-transforms", "push", "cifar10", "me/cifar10"], env=hub_env(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "dada-transforms: error: cannot push to 'me/cifar10'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dada_search_result_pushes_with_its_settings_and_loads_back(cache, tmp_path, make_image):
    for label in range(3):
        (tmp_path / "images" / f"class{label}").mkdir(parents=True)
        for index in range(8):
            make_image(24, 20, seed=10 * label + index).save(tmp_path / "images" / f"class{label}" / f"{index}.png")
    searched = subprocess.run(
        ["dada-search", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "images"), "--model", "wrn-10-1",
         "--image-size", "16", "--cutout", "8", "--batch-size", "4", "--device", "cpu", "--epochs", "1",
         "--name", "tiny", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    assert searched.returncode == 0, searched.stderr
    api = FakeHfApi()
    push_preset(tmp_path / "out" / "tiny.json", "me/tiny", safetensors_path=tmp_path / "out" / "tiny.safetensors", api=api)
    (files,) = api.commits
    card = files["README.md"].decode()
    assert "| dataset | imagefolder |" in card and "| model | wrn-10-1 |" in card and "| epochs | 1 |" in card
    assert "| searched images | 24 |" in card
    weights = json.loads(files["policy.json"])["metadata"]["sub_policy_weights"]
    assert f"| 1 | {weights[0]:.4f} |" in card

    add_commit(cache, "me/tiny", COMMIT_1, files)
    assert DADA("hf-hub:me/tiny").policy == load_policy(str(tmp_path / "out" / "tiny.json"))
    parameters = load_hub_parameters("me/tiny")
    assert parameters["alpha"].shape == (105,) and parameters["magnitudes"].shape == (105, 2)


# -- an unreachable Hub, without HF_HUB_OFFLINE: one request, then a clear error -----------------


class DroppingServer:
    """A local 'Hub' that reads each request line, records it and hangs up without answering."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                self.requests.append(connection.makefile("rb").readline().decode("latin-1").strip())

    def close(self) -> None:
        self.socket.close()


def test_an_unreachable_hub_fails_after_one_request_and_says_how_to_work_offline(tmp_path):
    add_commit(tmp_path / "hub", "org/cached", COMMIT_1, {"policy.json": policy_bytes(POLICY_2)})
    server = DroppingServer()
    env = {**hub_env(tmp_path), "HF_ENDPOINT": server.url}
    del env["HF_HUB_OFFLINE"]
    try:
        commands = [["dada-transforms", "show", f"hf-hub:{repo}"] for repo in ("org/missing", "org/cached")]
        processes = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
        (missing_out, missing_err), (cached_out, cached_err) = [p.communicate(timeout=300) for p in processes]
    finally:
        server.close()
    assert processes[0].returncode == 2, missing_err
    assert missing_err.startswith(f"dada-transforms: error: cannot reach the Hugging Face Hub at {server.url}")
    assert "policy.json of Hub repository 'org/missing' is not cached" in missing_err
    assert "then set HF_HUB_OFFLINE=1" in missing_err and "Traceback" not in missing_err
    assert processes[1].returncode == 0, cached_err  # a cached preset still loads: huggingface_hub's own fallback
    assert "second: 2 sub-policies" in cached_out
    by_repo = {repo: [r for r in server.requests if f"/{repo}/" in r] for repo in ("org/missing", "org/cached")}
    assert by_repo == {
        "org/missing": ["HEAD /org/missing/resolve/main/policy.json HTTP/1.1"],  # one attempt, no retries
        "org/cached": ["HEAD /org/cached/resolve/main/policy.json HTTP/1.1"],
    }


# -- parameters are checked against what dada-search saves -------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.pop("alpha"), "missing ['alpha']"),
        (lambda t: t.update(extra=torch.zeros(1)), "unexpected ['extra']"),
        (lambda t: t.update(alpha=torch.zeros(104)), "tensor 'alpha' is torch.float32 [104], expected torch.float32 [105]"),
        (lambda t: t.update(magnitudes=torch.zeros(105, 2, dtype=torch.float64)), "tensor 'magnitudes' is torch.float64 [105, 2], expected torch.float32"),
        (lambda t: t.update(probabilities=torch.zeros(105, 2, dtype=torch.int32)), "tensor 'probabilities' is torch.int32"),
        (lambda t: t["alpha"].__setitem__(3, float("nan")), "tensor 'alpha' has non-finite values"),
        (lambda t: t["probabilities"].__setitem__((0, 1), 1.5), "tensor 'probabilities' has values outside [0, 1]"),
    ],
    ids=["missing", "unexpected", "shape", "dtype", "integer", "nan", "range"],
)
def test_hub_parameters_must_match_the_search_spec(cache, tmp_path, change, message):
    tensors = search_tensors()
    change(tensors)
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1), "policy.safetensors": save(tensors)})
    with pytest.raises(ValueError, match="invalid policy.safetensors in Hub repository 'org/name': ") as error:
        load_hub_parameters("org/name")
    assert message in str(error.value)
    save_file(tensors, str(tmp_path / "p.safetensors"))
    api = FakeHfApi()
    with pytest.raises(ValueError, match="parameters file '.*p.safetensors': ") as error:
        push_preset(POLICY_1, "me/p", safetensors_path=tmp_path / "p.safetensors", api=api)
    assert message in str(error.value) and api.calls == []


def test_hub_parameters_with_a_search_history_are_accepted(cache):
    tensors = search_tensors()
    epochs = 3
    tensors.update({
        "history.sub_policy_weights": torch.full((epochs, 105), 1 / 105),
        "history.probabilities": torch.rand(epochs, 105, 2),
        "history.magnitudes": torch.rand(epochs, 105, 2),
    })
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1), "policy.safetensors": save(tensors)})
    assert load_hub_parameters("org/name")["history.magnitudes"].shape == (epochs, 105, 2)
    del tensors["history.magnitudes"]
    add_commit(cache, "org/other", COMMIT_1, {"policy.json": policy_bytes(POLICY_1), "policy.safetensors": save(tensors)})
    with pytest.raises(ValueError, match=r"missing \['history.magnitudes'\]"):
        load_hub_parameters("org/other")


def test_parameters_files_above_the_size_limit_are_refused_before_reading(cache, tmp_path, monkeypatch):
    from dada_transforms import hub

    data = save(search_tensors())
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1), "policy.safetensors": data})
    local = tmp_path / "p.safetensors"
    local.write_bytes(data)
    monkeypatch.setattr(hub, "MAX_PARAMETERS_FILE_BYTES", len(data) - 1)
    with pytest.raises(ValueError, match=f"policy.safetensors' is larger than the limit of {len(data) - 1} bytes"):
        load_hub_parameters("org/name")
    api = FakeHfApi()
    with pytest.raises(ValueError, match="parameters file '.*p.safetensors' is larger than the limit"):
        push_preset(POLICY_1, "me/p", safetensors_path=local, api=api)
    assert api.calls == []
    monkeypatch.setattr(hub, "MAX_PARAMETERS_FILE_BYTES", len(data))
    assert load_hub_parameters("org/name").keys() == search_tensors().keys()


def _policy_recording(content: bytes) -> Policy:
    """POLICY_1 with the parameters record a dada-search result carries."""
    record = {"parameters": {"file": "first.safetensors", "sha256": hashlib.sha256(content).hexdigest()}}
    return Policy(POLICY_1.sub_policies, name="first", metadata=record)


def test_hub_parameters_must_be_the_file_policy_json_records(cache):
    recorded, other = save(search_tensors(0)), save(search_tensors(1))
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(_policy_recording(recorded)), "policy.safetensors": recorded})
    assert load_hub_parameters("org/name").keys() == search_tensors().keys()
    add_commit(cache, "org/mixed", COMMIT_1, {"policy.json": policy_bytes(_policy_recording(recorded)), "policy.safetensors": other})
    with pytest.raises(ValueError) as error:
        load_hub_parameters("org/mixed")
    assert str(error.value).startswith(
        "invalid policy.safetensors in Hub repository 'org/mixed': policy.safetensors of Hub repository 'org/mixed' "
        "does not belong to policy.json of Hub repository 'org/mixed': its SHA-256 is "
    )


def test_a_fifo_in_the_hub_cache_is_refused_at_once(tmp_path):
    """In a subprocess with a timeout: a read that blocks in native code would hold the GIL."""
    cache = tmp_path / "hub"
    add_commit(cache, "org/name", COMMIT_1, {"policy.json": policy_bytes(POLICY_1), "policy.safetensors": b"x"})
    fifo = cache / "models--org--name" / "snapshots" / COMMIT_1 / "policy.safetensors"
    fifo.unlink()
    os.mkfifo(fifo)
    code = (
        "from dada_transforms.hub import load_hub_parameters\n"
        "try:\n    load_hub_parameters('org/name')\nexcept ValueError as error:\n    print(error)\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], env=hub_env(tmp_path), capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("load_hub_parameters blocked on a FIFO in the Hub cache")
    assert result.stdout.strip() == (
        f"invalid policy.safetensors in Hub repository 'org/name': cannot read parameters file {str(fifo)!r}: "
        f"not a regular file"
    ), result.stderr[-2000:]
