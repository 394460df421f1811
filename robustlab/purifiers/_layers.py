"""Helpers shared by the purifier and critic networks: width scaling, size arithmetic, input checks,
weight initialisation."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .._checks import check_int, check_positive
from ..errors import ConfigError, InputError

# A convolution's geometry for size arithmetic: (kernel, stride, padding).
ConvGeom = tuple[int, int, int]


def check_common(in_channels: int, width: float) -> tuple[int, float]:
    """Validate the arguments every network takes; returns them (width as float)."""
    return check_int("in_channels", in_channels, 1), check_positive("width", width)


def check_dropout(p: float) -> float:
    """A dropout probability in [0, 1); returns it as float."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ConfigError(f"dropout must be a probability in [0, 1), got {p!r}") from None
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"dropout must be a probability in [0, 1), got {p!r}")
    return value


def scaled(channels: int, width: float) -> int:
    """``channels`` multiplied by ``width``, rounded, at least 1."""
    return max(1, int(round(channels * width)))


def conv_map_size(size: int, layers: Sequence[ConvGeom]) -> int:
    """Spatial size after a stack of convolutions (<= 0 when the map would be empty)."""
    for kernel, stride, padding in layers:
        if size <= 0:
            return 0
        size = (size + 2 * padding - kernel) // stride + 1
    return size


def min_map_input(layers: Sequence[ConvGeom], limit: int = 4096) -> int:
    """Smallest input size for which ``layers`` give a non-empty (>= 1) output map."""
    for size in range(1, limit + 1):
        if conv_map_size(size, layers) >= 1:
            return size
    raise ValueError("no input size up to the limit gives a non-empty map")  # a bug, not user input


def check_purifier_input(x: torch.Tensor, in_channels: int, multiple: int, name: str) -> None:
    """Refuse a batch whose rank, channel count or spatial size the purifier cannot process.

    Only metadata is inspected (no device sync), so this is cheap inside attack loops.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{name} expects a (B, C, H, W) batch, got {shape}")
    if x.shape[1] != in_channels:
        raise InputError(f"{name} was built for {in_channels} channels but got {x.shape[1]}; "
                         f"create it with in_channels={x.shape[1]}")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise InputError(f"{name} needs height and width that are multiples of {multiple} "
                         f"(e.g. {2 * multiple}x{2 * multiple}), got {h}x{w}; resize or pad the images")


def init_pix2pix(module: nn.Module) -> None:
    """Pix2Pix initialisation (Isola et al. 2017): conv weights N(0, 0.02), BN weights N(1, 0.02),
    biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
