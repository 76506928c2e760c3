"""The networks trained during a search: built-in Wide-ResNets for small images, or any timm model.

``wrn-DEPTH-WIDTH`` (e.g. ``wrn-40-2``, ``wrn-28-10``, the tiny ``wrn-10-1``) is
the Wide-ResNet of Zagoruyko and Komodakis as used by the AutoAugment, Fast
AutoAugment and DADA code: a 3x3 stem of 16 channels, three groups of
pre-activation (BN-ReLU-conv) basic blocks of widths 16k, 32k and 64k with
strides 1, 2, 2, (depth - 4) / 6 blocks per group, then BN-ReLU, global average
pooling and a linear classifier. Any other name goes to ``timm.create_model``
with ``pretrained=False`` (nothing is downloaded).
"""

from __future__ import annotations

import difflib
import re

import timm
import timm.layers
import torch
from torch import nn

from .settings import SearchInputError

_WIDE_RESNET = re.compile(r"wrn-(\d+)-(\d+)")


class _WideBasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=stride, padding=1, bias=True)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=True)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    """Wide-ResNet-``depth``-``width`` for small (e.g. 32x32) RGB images."""

    def __init__(self, depth: int, width: int, num_classes: int) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"Wide-ResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if width < 1:
            raise ValueError(f"Wide-ResNet width must be >= 1, got {width}")
        blocks = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1, bias=True)]
        in_channels = widths[0]
        for out_channels, stride in zip(widths[1:], (1, 2, 2)):
            for index in range(blocks):
                layers.append(_WideBasicBlock(in_channels, out_channels, stride if index == 0 else 1))
                in_channels = out_channels
        layers += [nn.BatchNorm2d(in_channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def check_model_name(name: str) -> None:
    """Check that ``name`` is ``wrn-DEPTH-WIDTH`` with a valid depth or a timm model.

    Raises:
        SearchInputError: naming the model (with close timm names).
    """
    match = _WIDE_RESNET.fullmatch(name)
    if match:
        depth, width = int(match.group(1)), int(match.group(2))
        if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
            raise SearchInputError(
                f"Wide-ResNet {name!r}: depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...) and width >= 1"
            )
        return
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise SearchInputError(
            f"unknown model {name!r}{hint}; use wrn-DEPTH-WIDTH (e.g. wrn-40-2, wrn-28-10) "
            f"or a timm model name (timm.list_models())"
        )


def build_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised network ``name`` (see :func:`check_model_name`) with ``num_classes`` outputs."""
    check_model_name(name)
    match = _WIDE_RESNET.fullmatch(name)
    if match:
        return WideResNet(int(match.group(1)), int(match.group(2)), num_classes)
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def synchronized_batchnorm(network: nn.Module) -> nn.Module:
    """``network`` with every BatchNorm layer as a SyncBatchNorm (``--sync-bn``), weights and statistics kept.

    timm's fused ``BatchNormAct2d`` (normalisation + activation, as in EfficientNets)
    becomes timm's ``SyncBatchNormAct``, which keeps the activation;
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` would drop it.
    """
    return timm.layers.convert_sync_batchnorm(network)
