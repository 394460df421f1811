"""PatchGAN critics of the SSR purifier report: arch A (Pix2Pix's, cut) and arch B (9x9 map)."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int
from ..errors import ConfigError, InputError
from ._layers import (ConvGeom, check_common, check_dropout, conv_map_size, init_pix2pix,
                      min_map_input, scaled)
from ._registries import CRITICS


class _PatchCritic(nn.Module):
    """Shared plumbing: size validation, channel concatenation, [-1, 1] input mapping."""

    name: str
    geometry: tuple[ConvGeom, ...]  # (kernel, stride, padding) of every conv, in order

    def _setup(self, in_channels: int, width: float, image_size: int) -> tuple[int, float]:
        in_channels, width = check_common(in_channels, width)
        image_size = check_int("image_size", image_size, 1)
        if conv_map_size(image_size, self.geometry) < 1:
            raise ConfigError(f"{self.name} needs image_size >= {min_map_input(self.geometry)}, "
                              f"got {image_size}; its patch map would be empty")
        self.in_channels = in_channels
        self.image_size = image_size
        return in_channels, width

    def map_size(self, size: int) -> int:
        """Side of the patch logit map for an input of side ``size`` (<= 0: too small)."""
        return conv_map_size(size, self.geometry)

    def forward(self, x_cond: torch.Tensor, x_other: torch.Tensor) -> torch.Tensor:
        """Patch logits (B, 1, h, w) for the pair (x_cond, x_other), both (B, C, H, W) in [0, 1]."""
        if x_cond.dim() != 4 or x_cond.shape != x_other.shape:
            raise InputError(f"{self.name} needs two (B, C, H, W) batches of the same shape, got "
                             f"{tuple(x_cond.shape)} and {tuple(x_other.shape)}")
        if x_cond.shape[1] != self.in_channels:
            raise InputError(f"{self.name} was built for {self.in_channels} channels per image "
                             f"but got {x_cond.shape[1]}; create it with in_channels={x_cond.shape[1]}")
        h, w = x_cond.shape[-2:]
        if min(self.map_size(h), self.map_size(w)) < 1:
            raise InputError(f"{self.name} needs images of at least {min_map_input(self.geometry)}"
                             f"x{min_map_input(self.geometry)} pixels, got {h}x{w}")
        pair = torch.cat([x_cond, x_other], dim=1) * 2 - 1  # (B, 2C, H, W) in [-1, 1]
        return self.net(pair)


def _block(cin: int, cout: int, geom: ConvGeom, bn: bool, dropout: float = 0.0) -> list[nn.Module]:
    k, s, p = geom
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, p, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    if dropout:
        layers.append(nn.Dropout(dropout))
    return layers


@CRITICS.register("patchgan-a", help="Pix2Pix 70x70 PatchGAN minus its stride-1 block "
                                     "(arch A): 2x2 logit map at 32x32")
class PatchGANA(_PatchCritic):
    """Critic "A": Pix2Pix's ``NLayerDiscriminator`` (n_layers=3; Isola et al. 2017) cut as in the
    SSR report.

    Pix2Pix's version is conv(s2) - [conv(s2) BN] x2 - conv(s1) BN - conv(s1, to 1 channel), all 4x4
    with padding 1, LeakyReLU 0.2. The report removes the last conv block and states a 2x2 map at
    32x32. Arithmetic: the full net already gives 32 -> 16 -> 8 -> 4 -> 3 -> 2, and removing the
    stride-1 block with the 4x4/pad-1 output conv kept gives 3x3. robustlab removes the block and
    makes the output conv 3x3 without padding, which gives the report's 2x2:
    32 -> 16 -> 8 -> 4 (three 4x4 stride-2 pad-1 convs) -> 2 (3x3 valid conv). Receptive field 38.

    Args: in_channels (per image; the critic sees 2*in_channels), width (multiplies ndf=64),
    image_size (validated: needs >= 24).
    """

    name = "patchgan-a"
    geometry = ((4, 2, 1), (4, 2, 1), (4, 2, 1), (3, 1, 0))

    def __init__(self, in_channels: int = 3, width: float = 1.0, image_size: int = 32) -> None:
        super().__init__()
        in_channels, width = self._setup(in_channels, width, image_size)
        c = [2 * in_channels] + [scaled(n, width) for n in (64, 128, 256)]
        g = self.geometry
        layers = _block(c[0], c[1], g[0], bn=False) + _block(c[1], c[2], g[1], bn=True)
        layers += _block(c[2], c[3], g[2], bn=True)
        layers.append(nn.Conv2d(c[3], 1, *g[3]))  # patch logits
        self.net = nn.Sequential(*layers)
        init_pix2pix(self)


@CRITICS.register("patchgan-b", help="SSR report's critic (arch B): 5 convs, first strided, BN, "
                                     "dropout, 9x9 logit map at 32x32")
class PatchGANB(_PatchCritic):
    """Critic "B" of the SSR report (section 4): five convolutions, only the first strided,
    BN, LeakyReLU 0.2, dropout; a 9x9 patch map on 32x32 inputs.

    Size arithmetic, out = (in + 2*pad - kernel) // stride + 1, at 32x32:
    conv1 4x4 s2 p0: (32 - 4)//2 + 1 = 15; conv2-4 3x3 s1 p0: 15 -> 13 -> 11 -> 9;
    conv5 3x3 s1 p1 (to 1 channel): 9 -> 9. Receptive field 20x20. Widths 64-128-256-512 (x width);
    BN and dropout on convs 2-4 (Pix2Pix leaves the first conv unnormalised).

    Args: in_channels (per image), width (multiplies 64), image_size (validated: needs >= 16),
    dropout (probability after convs 2-4; the report does not give it, default 0.5 as Pix2Pix's).
    """

    name = "patchgan-b"
    geometry = ((4, 2, 0), (3, 1, 0), (3, 1, 0), (3, 1, 0), (3, 1, 1))

    def __init__(self, in_channels: int = 3, width: float = 1.0, image_size: int = 32,
                 dropout: float = 0.5) -> None:
        super().__init__()
        in_channels, width = self._setup(in_channels, width, image_size)
        p = check_dropout(dropout)
        c = [2 * in_channels] + [scaled(n, width) for n in (64, 128, 256, 512)]
        g = self.geometry
        layers = _block(c[0], c[1], g[0], bn=False)
        for i in (1, 2, 3):
            layers += _block(c[i], c[i + 1], g[i], bn=True, dropout=p)
        layers.append(nn.Conv2d(c[4], 1, *g[4]))  # patch logits
        self.net = nn.Sequential(*layers)
        init_pix2pix(self)
