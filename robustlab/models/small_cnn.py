"""A small CNN for quick CPU runs and grey-scale sets (the "SmallCNN" of the TRADES code base).

Four 3x3 convolutions 32-32-64-64 with ReLU, a 2x2 max-pool after the 2nd and the 4th, then
flatten, Linear 200, ReLU, Linear num_classes. Every width scales with ``width``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError, InputError
from .factory import MODELS, scaled
from .normalize import Normalize


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """``blocks[0]`` = conv, conv; ``blocks[1]`` = pool, conv, conv; the head pools, classifies."""

    def __init__(self, num_classes: int, in_channels: int, width: float, mean: Sequence[float],
                 std: Sequence[float], input_size: int = 32) -> None:
        super().__init__()
        if isinstance(input_size, bool) or not isinstance(input_size, int) \
                or input_size < 4 or input_size % 4:
            raise ConfigError(f"small-cnn input_size must be a multiple of 4 (two 2x2 pools), "
                              f"got {input_size!r}")
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, input_size
        self.normalize = Normalize(mean, std)
        c1, c2, hidden = scaled(32, width), scaled(64, width), scaled(200, width)
        self.blocks = nn.ModuleList([
            nn.Sequential(*_conv(in_channels, c1), *_conv(c1, c1)),
            nn.Sequential(nn.MaxPool2d(2), *_conv(c1, c2), *_conv(c2, c2)),
        ])
        side = input_size // 4
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Linear(c2 * side * side, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, S, S) in [0, 1] -> (B, num_classes) logits; S = input_size (flatten fixes it)
        if x.dim() == 4 and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise InputError(f"small-cnn was built for {self.input_size}x{self.input_size} images, "
                             f"got {x.shape[-2]}x{x.shape[-1]}; pass input_size= to create()")
        h = self.normalize(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


@MODELS.register("small-cnn", help="4-conv CNN (32-32-64-64, FC 200) for quick CPU runs")
def small_cnn(num_classes: int, in_channels: int, width: float, mean: Sequence[float],
              std: Sequence[float], input_size: int = 32) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, width, mean, std, input_size)
