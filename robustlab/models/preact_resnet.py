"""PreActResNet18 (He et al. 2016, "Identity Mappings"), as used by Wong et al. 2020 (Fast-FGSM).

Each block is BN-ReLU-conv-BN-ReLU-conv with the shortcut taken after the first BN-ReLU when it
needs a 1x1 projection; the network ends with BN-ReLU, global average pooling and a linear layer.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .factory import MODELS, scaled
from .normalize import Normalize
from .resnet import STAGES


class PreActBlock(nn.Module):
    """Pre-activation basic block; ``shortcut`` is a 1x1 conv when shape changes, else identity."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """PreActResNet18 for 32x32 inputs. ``blocks[0]`` is the stem conv, ``blocks[k]`` layer k."""

    def __init__(self, num_classes: int, in_channels: int, width: float,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.normalize = Normalize(mean, std)
        inplanes = scaled(64, width)
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, inplanes, 3, padding=1, bias=False)]
        for i, planes in enumerate(STAGES):
            out = scaled(planes, width)
            stride = 1 if i == 0 else 2
            blocks.append(nn.Sequential(PreActBlock(inplanes, out, stride), PreActBlock(out, out)))
            inplanes = out
        self.blocks = nn.ModuleList(blocks)
        self.bn = nn.BatchNorm2d(inplanes)  # the final pre-activation before pooling
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) in [0, 1] -> (B, num_classes) logits
        h = self.normalize(x)
        for block in self.blocks:
            h = block(h)
        h = F.adaptive_avg_pool2d(F.relu(self.bn(h)), 1).flatten(1)
        return self.fc(h)


@MODELS.register("preact-resnet18", help="PreActResNet18 (Wong et al. 2020's Fast-FGSM model)")
def preact_resnet18(num_classes: int, in_channels: int, width: float, mean: Sequence[float],
                    std: Sequence[float]) -> PreActResNet18:
    return PreActResNet18(num_classes, in_channels, width, mean, std)
