"""Generator B of the SSR purifier report (seed 000, section 4 and appendix): the chosen U-Net."""
from __future__ import annotations

import torch
from torch import nn

from ._layers import check_common, check_dropout, check_purifier_input, init_pix2pix, scaled
from ._registries import PURIFIERS

_WIDTHS = (64, 128, 256, 512, 512)  # stem, then the outputs of the 4 down blocks (REFERENCE.md)


def _down(cin: int, cout: int) -> nn.Sequential:
    # 4x4 stride-2 conv halves H and W; bias is redundant before BN.
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


def _up(cin: int, cout: int) -> nn.Sequential:
    # 4x4 stride-2 transposed conv doubles H and W.
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@PURIFIERS.register("unet-b", help="SSR report's chosen U-Net (arch B): stem + 4 down/4 up, "
                                   "skip connections, bottleneck dropout, sigmoid output")
class UNetB(nn.Module):
    """U-Net purifier "B" of the SSR report (Mezhoudi & Vu 2022, section 4 and appendix).

    A stem of two 3x3 convolutions with LeakyReLU(0.2) (no normalisation), four down blocks
    (4x4 stride-2 conv, BN, LeakyReLU 0.2), dropout at the end of the encoder, four up blocks
    (4x4 stride-2 transposed conv, BN, ReLU) each followed by concatenation with the mirrored encoder
    feature, and a 3x3 output conv with a sigmoid. Widths 64-128-256-512-512 at ``width=1``
    (the report leaves them unsaid; REFERENCE.md fixes them). A 32x32 input has a 2x2 bottleneck.

    Args:
        in_channels: image channels (input and output).
        width: multiplies every channel count (CPU presets use 0.25).
        dropout: dropout probability at the bottleneck (0.5, as in Pix2Pix).

    Input (B, C, H, W) in [0, 1] with H and W multiples of 16; output the same shape in [0, 1].
    Internally the input is mapped to [-1, 1]; the sigmoid maps the output back to [0, 1].
    """

    size_multiple = 16  # four stride-2 downsamplings

    def __init__(self, in_channels: int = 3, width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        in_channels, width = check_common(in_channels, width)
        self.in_channels = in_channels
        c = [scaled(n, width) for n in _WIDTHS]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c[0], 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(c[0], c[0], 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))
        self.downs = nn.ModuleList([_down(c[i], c[i + 1]) for i in range(4)])
        self.dropout = nn.Dropout(check_dropout(dropout))
        # Up block i takes the previous output (concatenated with its skip, except the first)
        # and returns the width of the encoder level it is joined to next.
        self.ups = nn.ModuleList([_up(c[4], c[3]), _up(2 * c[3], c[2]), _up(2 * c[2], c[1]),
                                  _up(2 * c[1], c[0])])
        self.out = nn.Conv2d(2 * c[0], in_channels, 3, 1, 1)
        init_pix2pix(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_purifier_input(x, self.in_channels, self.size_multiple, "unet-b")
        h = self.stem(x * 2 - 1)  # (B, c0, H, W)
        skips = [h]
        for down in self.downs:
            h = down(h)
            skips.append(h)  # (B, c1..c4, H/2..H/16)
        h = self.dropout(skips.pop())  # bottleneck (B, c4, H/16, W/16)
        for up in self.ups:
            h = torch.cat([skips.pop(), up(h)], dim=1)
        return torch.sigmoid(self.out(h))  # (B, C, H, W) in [0, 1]

