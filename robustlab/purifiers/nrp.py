"""NRP purifier (Naseer et al. 2020): an ESRGAN-style RRDB network at the input resolution."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int
from ._layers import check_common, check_purifier_input, scaled
from ._registries import PURIFIERS


class _DenseBlock(nn.Module):
    """Residual dense block: 5 3x3 convs, each seeing all earlier maps (growth ``gc``)."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, 1, 1) for i in range(5)])
        self.act = nn.LeakyReLU(0.2, inplace=True)
        for conv in self.convs:  # ESRGAN's init: Kaiming (fan-in) scaled by 0.1, zero bias
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(self.act(conv(torch.cat(feats, dim=1))))  # (B, gc, H, W)
        return x + 0.2 * self.convs[-1](torch.cat(feats, dim=1))  # residual scaling 0.2


class _RRDB(nn.Module):
    """Residual-in-residual dense block: 3 dense blocks and a 0.2-scaled outer residual."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[_DenseBlock(nf, gc) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


@PURIFIERS.register("nrp", help="NRP purifier (Naseer et al. 2020): RRDB trunk, 23 blocks by "
                                "default, sigmoid output")
class NRP(nn.Module):
    """Neural Representation Purifier generator (Naseer et al., CVPR 2020).

    conv(in_channels -> nf) -> ``n_blocks`` RRDB blocks (each 3 residual dense blocks of 5 3x3
    convs, growth ``gc``, LeakyReLU 0.2, residual scaling 0.2 inside the dense block and for the
    RRDB) -> trunk conv, added to the first conv's output (long skip) -> conv(nf -> in_channels).
    All convolutions are 3x3, stride 1, so any H and W work and the output keeps the input size.

    Output mapping: the input is shifted to [-1, 1] and the last conv's output goes through a
    sigmoid, so the purifier maps [0, 1] to (0, 1) smoothly (a clamp would zero the gradient of
    saturated pixels and mask white-box attacks).

    Size: with nf=64, gc=32, 23 blocks and 3 channels this has 16,587,203 parameters: the
    ESRGAN RRDB trunk (16.7M with its two upsampling convs and HR conv, which a same-resolution
    purifier drops). The published NRP code ends the trunk with a conv straight to 3 channels and
    no long skip; robustlab keeps ESRGAN's trunk conv + long skip and a separate output conv.

    Args:
        in_channels: image channels (input and output).
        width: multiplies nf (64) and gc (32).
        n_blocks: number of RRDB blocks (23 published; CPU presets use 2-4).
    """

    size_multiple = 1

    def __init__(self, in_channels: int = 3, width: float = 1.0, n_blocks: int = 23) -> None:
        super().__init__()
        in_channels, width = check_common(in_channels, width)
        n_blocks = check_int("n_blocks", n_blocks, 1)
        self.in_channels = in_channels
        nf, gc = scaled(64, width), scaled(32, width)
        self.conv_first = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.trunk = nn.Sequential(*[_RRDB(nf, gc) for _ in range(n_blocks)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, in_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_purifier_input(x, self.in_channels, self.size_multiple, "nrp")
        feat = self.conv_first(x * 2 - 1)  # (B, nf, H, W)
        feat = feat + self.trunk_conv(self.trunk(feat))  # long skip
        return torch.sigmoid(self.conv_last(feat))  # (B, C, H, W) in [0, 1]
