"""Generator A of the SSR purifier report: the original Pix2Pix U-Net, cut to fit 32x32 inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import check_common, check_dropout, check_purifier_input, init_pix2pix, scaled
from ._registries import PURIFIERS

_DEPTH = 4  # 32 -> 16 -> 8 -> 4 -> 2: unet-b's 4 down-samplings (the report: "the same number")
_DROPOUT_LEVELS = (2, 3)  # decoder stages of the two innermost levels (fed 512 channels)


def _levels(in_channels: int, ngf: int) -> list[tuple[int, int]]:
    # (outer_nc, inner_nc) per level, outermost first, as in Pix2Pix: ngf doubling to 8*ngf.
    mult = [1, 2, 4, 8]
    return [(in_channels if i == 0 else ngf * mult[i - 1], ngf * mult[i]) for i in range(_DEPTH)]


@PURIFIERS.register("unet-a", help="original Pix2Pix U-Net (arch A) cut to 4 down/4 up "
                                   "(unet-b's depth) for 32x32, sigmoid output")
class UNetA(nn.Module):
    """U-Net purifier "A": the Pix2Pix generator (Isola et al. 2017) as used in the SSR report.

    Pix2Pix's ``UnetGenerator``: 4x4 stride-2 convolutions; encoder LeakyReLU(0.2) before each
    convolution, BN everywhere except the outermost and innermost downsampling; decoder ReLU,
    4x4 stride-2 transposed convolution, BN (not on the output), skip connections by concatenation;
    ``ngf`` = 64 channels doubling to 512.

    Depth: the report removes the last 2 of Pix2Pix's 8 down-samplings (and their up-samplings),
    leaving 6, and says B has "the same number of upsampling and downsampling layers as
    architecture A" while B has 4 of each. The two cannot both hold, and 6 cannot run at 32x32 (6 halvings
    of 32 is below one pixel; 5 is the most). robustlab keeps the statement that survives at
    32x32: A has B's 4 down- and 4 up-samplings (32 -> 2, a 2x2 bottleneck as in B), with
    Pix2Pix's channels 64-128-256-512 (its innermost block is ``UnetSkipConnectionBlock(4*ngf,
    8*ngf, innermost=True)``). Pix2Pix puts dropout 0.5 on its 8*ngf -> 8*ngf intermediate decoder
    blocks; none is left at this depth, so dropout sits on the decoder stages of the two innermost
    levels (both fed 512 channels). With 3 channels A has 6,171,267 parameters at ``width=1``,
    more than unet-b's 4,175,779, as the report says of A and B.

    Output: Pix2Pix's tanh is replaced by a sigmoid (the same curve rescaled to [0, 1]); the input
    is mapped to [-1, 1] inside, as Pix2Pix expects.

    Args:
        in_channels: image channels (input and output).
        width: multiplies ``ngf`` (CPU presets use 0.25).
        dropout: dropout probability in the inner decoder stages.

    Input (B, C, H, W) in [0, 1] with H and W multiples of 16; output the same shape in [0, 1].
    """

    size_multiple = 2 ** _DEPTH

    def __init__(self, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        in_channels, width = check_common(in_channels, width)
        p = check_dropout(dropout)
        self.in_channels = in_channels
        levels = _levels(in_channels, scaled(64, width))
        innermost = _DEPTH - 1
        downs, ups = [], []
        for i, (outer, inner) in enumerate(levels):
            conv = nn.Conv2d(outer, inner, 4, 2, 1, bias=False)
            with_bn = 0 < i < innermost
            downs.append(nn.Sequential(conv, nn.BatchNorm2d(inner)) if with_bn else conv)
            up_in = inner if i == innermost else 2 * inner  # inner levels return cat(skip, up)
            if i == 0:
                ups.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(up_in, in_channels, 4, 2, 1)))
                continue
            up = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
            if i in _DROPOUT_LEVELS:
                up.append(nn.Dropout(p))
            ups.append(nn.Sequential(*up))
        self.downs = nn.ModuleList(downs)  # outermost first
        self.ups = nn.ModuleList(reversed(ups))  # innermost first, in the order they run
        init_pix2pix(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_purifier_input(x, self.in_channels, self.size_multiple, "unet-a")
        h = x * 2 - 1  # (B, C, H, W) in [-1, 1]
        skips = []
        for i, down in enumerate(self.downs):
            if i > 0:
                # Pix2Pix applies this LeakyReLU in place, so its skip carries the activated map too.
                h = F.leaky_relu(h, 0.2)
                skips.append(h)
            h = down(h)  # bottleneck after the loop: (B, 8*ngf, H/16, W/16)
        for up in self.ups:
            h = up(h)
            if skips:
                h = torch.cat([skips.pop(), h], dim=1)
        return torch.sigmoid(h)  # (B, C, H, W) in [0, 1]
