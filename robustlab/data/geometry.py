"""Batched random geometric augmentations on float (B, C, H, W) images, driven by a torch.Generator.

Random numbers are drawn on the generator's device and moved to the images' device, so the same
generator state gives the same augmentation whatever device the images live on.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def uniform(g: torch.Generator, n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    """(n,) samples of U(lo, hi) from ``g``, on ``device``."""
    return (lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)).to(device)


def bernoulli(g: torch.Generator, n: int, p: float, device: torch.device) -> torch.Tensor:
    """(n,) booleans, True with probability ``p``."""
    return (torch.rand(n, generator=g, device=g.device) < p).to(device)


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator, mode: str = "reflect") -> torch.Tensor:
    """Pad ``pad`` pixels per side (reflect or zeros) and crop a random H x W window per image."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode) if mode != "constant" else \
        F.pad(x, (pad, pad, pad, pad))
    hp, wp = h + 2 * pad, w + 2 * pad
    offs = torch.randint(0, 2 * pad + 1, (2, b), generator=g, device=g.device).to(x.device)
    # one flat gather: the window's top-left in the padded image plus the fixed H x W pattern
    window = (torch.arange(h, device=x.device)[:, None] * wp
              + torch.arange(w, device=x.device)).view(1, h * w)
    index = window + (offs[0] * wp + offs[1])[:, None]  # (B, H*W)
    out = padded.reshape(b, c, hp * wp).gather(2, index[:, None, :].expand(b, c, h * w))
    return out.view(b, c, h, w)


def random_hflip(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = bernoulli(g, x.shape[0], p, x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def affine(x: torch.Tensor, angle_deg: torch.Tensor, scale: torch.Tensor, shift_x: torch.Tensor,
           shift_y: torch.Tensor) -> torch.Tensor:
    """Rotate by ``angle_deg``, scale about the centre and shift by whole or fractional pixels.

    All arguments are (B,) tensors. Bilinear sampling; pixels from outside the image are 0. The
    output pixel at offset d from the centre samples the input at R(-a) (d - shift) / scale.
    """
    b, _, h, w = x.shape
    a = angle_deg.to(x) * (math.pi / 180)
    cos, sin, s = torch.cos(a), torch.sin(a), scale.to(x)
    # in normalised coordinates (x by W/2, y by H/2) the pixel-space rotation picks up aspect ratios
    mat = torch.stack([cos, sin * h / w, -sin * w / h, cos], 1).view(b, 2, 2) / s[:, None, None]
    shift = torch.stack([shift_x.to(x) * 2 / w, shift_y.to(x) * 2 / h], 1)  # (B, 2)
    theta = torch.cat([mat, -(mat @ shift[:, :, None])], 2)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(x: torch.Tensor, g: torch.Generator, degrees: float = 10.0, translate: float = 2.0,
                  scale: tuple[float, float] = (0.9, 1.1)) -> torch.Tensor:
    """Random rotation in +-``degrees``, shift in +-``translate`` px per axis, scale in ``scale``."""
    n, dev = x.shape[0], x.device
    return affine(x, uniform(g, n, -degrees, degrees, dev), uniform(g, n, *scale, dev),
                  uniform(g, n, -translate, translate, dev), uniform(g, n, -translate, translate, dev))


def random_resized_crop(x: torch.Tensor, g: torch.Generator, scale: tuple[float, float] = (0.1, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = False) -> torch.Tensor:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize back to H x W.

    As torchvision's RandomResizedCrop, but batched: a crop that would not fit is clipped to the
    image instead of being redrawn. With ``flip`` the crop is also mirrored with probability 0.5.
    """
    b, _, h, w = x.shape
    dev = x.device
    area = uniform(g, b, *scale, dev)
    r = torch.exp(uniform(g, b, math.log(ratio[0]), math.log(ratio[1]), dev))
    cw = torch.sqrt(area * r * h / w).clamp(max=1.0)  # crop width as a fraction of W
    ch = torch.sqrt(area / r * w / h).clamp(max=1.0)
    cx = uniform(g, b, -1.0, 1.0, dev) * (1 - cw)  # crop centre, normalised coordinates
    cy = uniform(g, b, -1.0, 1.0, dev) * (1 - ch)
    sign = torch.where(bernoulli(g, b, 0.5, dev), -1.0, 1.0) if flip else torch.ones(b, device=dev)
    zero = torch.zeros(b, device=dev)
    theta = torch.stack([cw * sign, zero, cx, zero, ch, cy], 1).view(b, 2, 3).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
