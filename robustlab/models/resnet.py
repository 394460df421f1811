"""CIFAR-style ResNet18 (He et al. 2016): 3x3 stem, no max-pool, BasicBlocks [2, 2, 2, 2].

The residual blocks are torchvision's ``BasicBlock`` so that parameter names match torchvision
(``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample``). At width 1 with 10 classes the model has
11,173,962 parameters, the figure usually quoted for CIFAR ResNet18.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from .factory import MODELS, scaled
from .normalize import Normalize

STAGES = (64, 128, 256, 512)


def make_layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` BasicBlocks; the first one changes resolution/width with a 1x1 conv shortcut."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes))
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def make_stages(inplanes: int, width: float) -> tuple[list[nn.Sequential], int]:
    """The four ResNet18 stages (strides 1, 2, 2, 2) and their output channel count."""
    stages = []
    for i, planes in enumerate(STAGES):
        out = scaled(planes, width)
        stages.append(make_layer(inplanes, out, 2, stride=1 if i == 0 else 2))
        inplanes = out
    return stages, inplanes


class CifarResNet18(nn.Module):
    """ResNet18 for 32x32 inputs. ``blocks[0]`` is the stem, ``blocks[k]`` is ResNet layer k."""

    def __init__(self, num_classes: int, in_channels: int, width: float,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.normalize = Normalize(mean, std)
        stem_out = scaled(64, width)
        stem = nn.Sequential(nn.Conv2d(in_channels, stem_out, 3, padding=1, bias=False),
                             nn.BatchNorm2d(stem_out), nn.ReLU(inplace=True))
        stages, channels = make_stages(stem_out, width)
        self.blocks = nn.ModuleList([stem, *stages])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) in [0, 1] -> (B, num_classes) logits
        h = self.normalize(x)
        for block in self.blocks:
            h = block(h)
        return self.fc(self.head(h))


@MODELS.register("resnet18", help="CIFAR-style ResNet18 (3x3 stem, no max-pool)")
def resnet18(num_classes: int, in_channels: int, width: float, mean: Sequence[float],
             std: Sequence[float]) -> CifarResNet18:
    return CifarResNet18(num_classes, in_channels, width, mean, std)
