"""Generator B of the SSR purifier report (seed 000, section 4 and appendix): the chosen U-Net."""
from __future__ import annotations

import torch
from torch import nn

from ._layers import check_common, check_dropout, check_purifier_input, init_pix2pix, scaled
from ._registries import PURIFIERS

# Stem, then the outputs of the 4 down blocks: half of Pix2Pix's ngf ladder (see the docstring).
_WIDTHS = (32, 64, 128, 256, 256)


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
    feature, and a 3x3 output conv with a sigmoid. A 32x32 input has a 2x2 bottleneck.

    What the report says of B, and how each holds at 32x32: the stem of 2 convolutions with
    LeakyReLU, 4 down- and 4 up-sampling blocks with symmetric skips, LeakyReLU in the encoder,
    ReLU in the decoder and dropout at the end of the encoder all hold as written. "The same number
    of upsampling and downsampling layers as A, but less parameters" holds with unet-a cut to the
    same 4 levels (its docstring says why the report's 6 cannot run at 32x32). The report gives no
    widths. REFERENCE.md's default 64-128-256-512-512 would make B the larger network (16,693,059
    parameters against A's 6,171,267 at 4 levels). robustlab therefore halves it to
    32-64-128-256-256 at ``width=1``: B has 4,175,779 parameters with 3 channels, about two
    thirds of A's, and fewer than A at every ``width`` from 0.03 up (below that the channel counts
    round to 1-3 and the ratio is noise). robustlab's earlier B, with REFERENCE.md's widths, is
    ``width=2``.

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

