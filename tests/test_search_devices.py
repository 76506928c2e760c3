"""The search's device handling, tested through its logic on the CPU (no GPU needed).

CUDA is faked where a decision depends on it (``torch.cuda.is_available`` and
friends monkeypatched); what runs on the CPU runs for real.
"""

from __future__ import annotations

import copy

import pytest
import timm
import timm.layers
import torch

from dada_transforms.search.device_checks import indexed_device, resolve_device
from dada_transforms.search.models import synchronized_batchnorm


@pytest.fixture
def two_gpus_current_1(monkeypatch):
    """A machine with two CUDA devices, the current one being cuda:1."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


def test_cuda_devices_are_resolved_with_their_index(two_gpus_current_1) -> None:
    # a generator made on "cuda" reports "cuda:N": an unindexed device never equals a tensor's
    assert resolve_device(None) == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert indexed_device("cuda") == indexed_device("cuda:1") != indexed_device("cuda:0")


def test_timm_batchnorm_act_keeps_its_activation_under_sync_bn() -> None:
    torch.manual_seed(0)
    network = timm.create_model("test_efficientnet", pretrained=False, num_classes=10)
    assert any(isinstance(module, timm.layers.BatchNormAct2d) for module in network.modules())
    for module in network.modules():  # statistics that are not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    network.eval()
    converted = synchronized_batchnorm(copy.deepcopy(network)).eval()
    assert not any(type(module) is timm.layers.BatchNormAct2d for module in converted.modules())
    assert any(isinstance(module, torch.nn.SyncBatchNorm) for module in converted.modules())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # SyncBatchNorm in eval mode runs on the CPU
        torch.testing.assert_close(converted(images), network(images), rtol=0, atol=0)
    assert converted.state_dict().keys() == network.state_dict().keys()


def test_the_search_runs_with_deterministic_cudnn_and_restores_the_caller_flags(image_tree, tmp_path, monkeypatch) -> None:
    from dada_transforms.search import BilevelSearchStep
    from dada_transforms.search.loop import search

    seen = []
    real_step = BilevelSearchStep.step

    def recording_step(self, *batches):
        seen.append((torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark))
        return real_step(self, *batches)

    monkeypatch.setattr(BilevelSearchStep, "step", recording_step)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    search("imagefolder", name="run", output=tmp_path, data_dir=image_tree, model="wrn-10-1", image_size=16,
           cutout=8, batch_size=4, epochs=1, device="cpu", progress=False, data_path="memory")
    assert seen and set(seen) == {(True, False)}
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
