"""Batched colour augmentations on float (B, C, H, W) images in [0, 1] (SimCLR / torchvision style).

Per-image factors come from a torch.Generator; grey-scale (C = 1) images skip saturation and hue.
"""
from __future__ import annotations

import torch

from .geometry import bernoulli, uniform
from .pixels import LUMA


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance of (B, C, H, W) images."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    # f * x + (1 - f) * other, clamped as torchvision does
    return (other + f[:, None, None, None] * (x - other)).clamp(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6,
                    torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = torch.where(delta > 0, h, torch.zeros_like(h)) % 1.0
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)),
                    torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(1)
    out = []
    for n in (5.0, 3.0, 1.0):  # R, G, B
        k = (n + h * 6) % 6
        out.append(v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(out, 1)


def colour_jitter(x: torch.Tensor, g: torch.Generator, brightness: float, contrast: float,
                  saturation: float, hue: float = 0.0, p: float = 1.0) -> torch.Tensor:
    """With probability ``p`` per image, scale brightness, contrast and saturation by U(1-v, 1+v)
    and shift hue by U(-hue, hue), in that fixed order (torchvision's ColorJitter draws the order)."""
    b, c = x.shape[:2]
    dev = x.device
    on = bernoulli(g, b, p, dev)
    one = torch.ones(b, device=dev, dtype=x.dtype)
    fb = torch.where(on, uniform(g, b, 1 - brightness, 1 + brightness, dev).to(x), one)
    fc = torch.where(on, uniform(g, b, 1 - contrast, 1 + contrast, dev).to(x), one)
    fs = torch.where(on, uniform(g, b, 1 - saturation, 1 + saturation, dev).to(x), one)
    dh = uniform(g, b, -hue, hue, dev).to(x)
    x = _blend(x, torch.zeros_like(x), fb)
    x = _blend(x, grey(x).mean((1, 2, 3), keepdim=True), fc)
    if c == 3:
        x = _blend(x, grey(x), fs)
        if hue > 0:
            hsv = rgb_to_hsv(x)
            hsv = torch.cat([(hsv[:, :1] + dh[:, None, None, None]) % 1.0, hsv[:, 1:]], 1)
            x = torch.where(on[:, None, None, None], hsv_to_rgb(hsv).clamp(0, 1), x)
    return x


def random_grayscale(x: torch.Tensor, g: torch.Generator, p: float = 0.2) -> torch.Tensor:
    """Replace each image by its luminance (kept at C channels) with probability ``p``."""
    on = bernoulli(g, x.shape[0], p, x.device)
    if x.shape[1] == 1:
        return x
    return torch.where(on[:, None, None, None], grey(x).expand_as(x), x)
