"""VGG 11/13/16/19 for 32x32 inputs (Simonyan & Zisserman 2015, CIFAR variant with BatchNorm).

conv3x3 + BN + ReLU stacks; ``"M"`` is a 2x2 max-pool. After the five pools a 32x32 input is a
1x1 map of 512*width channels, followed by one linear layer (the usual CIFAR head).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from .factory import MODELS, scaled
from .normalize import Normalize

CONFIGS: dict[str, list[Union[int, str]]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """A 32x32 VGG classifier whose ``blocks`` are the conv stacks between max-pools.

    Block 1 is the convolutions before the first pool; block k >= 2 starts with the (k-1)-th pool.
    So the output of block k is the feature map after its last ReLU and before its pool, which is
    what the SSR report's feature-distortion attack (seed 000, Alg. 1) calls "the first k blocks".
    """

    def __init__(self, cfg: Sequence[Union[int, str]], num_classes: int, in_channels: int,
                 width: float, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.normalize = Normalize(mean, std)
        blocks: list[nn.Sequential] = []
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                blocks.append(nn.Sequential(*layers))
                layers = [nn.MaxPool2d(2)]  # the next block starts with this block's pool
                continue
            out = scaled(int(item), width)
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.blocks = nn.ModuleList(blocks)
        # The last pool ends the cfg; the adaptive pool is the identity on 32x32 inputs (1x1 map)
        # and lets larger inputs through.
        self.head = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, 32, 32) in [0, 1] -> (B, num_classes) logits
        h = self.normalize(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def _register(name: str) -> None:
    def factory(num_classes: int, in_channels: int, width: float, mean: Sequence[float],
                std: Sequence[float]) -> VGG:
        return VGG(CONFIGS[name], num_classes, in_channels, width, mean, std)

    depth = name[3:]
    factory.__name__ = name
    help_text = f"VGG{depth} with BatchNorm for 32x32 inputs (5 conv blocks)"
    MODELS.register(name, help=help_text)(factory)


for _name in CONFIGS:
    _register(_name)
