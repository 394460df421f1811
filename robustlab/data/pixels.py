"""Whole-dataset pixel operations on uint8 (N, C, H, W) tensors: pad, resize, channel conversion."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

# ITU-R BT.601 luma weights, the ones PIL and torchvision use for RGB -> grey
LUMA = (0.299, 0.587, 0.114)
_CHUNK = 4096  # images per chunk, so a float copy of 60k images never sits in memory at once


def pad_zeros(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad ``pad`` zero pixels on every side: (N, C, H, W) -> (N, C, H + 2p, W + 2p)."""
    if pad <= 0:
        return images
    return F.pad(images, (pad, pad, pad, pad), mode="constant", value=0)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking) of uint8 images to ``size`` x ``size``."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, images.shape[0], _CHUNK):
        chunk = images[i:i + _CHUNK].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
        out[i:i + _CHUNK] = _to_uint8(chunk)
    return out


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition, RGB -> grey by luminance; unchanged when the count already fits."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if have == 3 and channels == 1:
        w = torch.tensor(LUMA).view(1, 3, 1, 1)
        out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
        for i in range(0, images.shape[0], _CHUNK):
            out[i:i + _CHUNK] = _to_uint8((images[i:i + _CHUNK].float() * w).sum(1, keepdim=True))
        return out
    raise ConfigError(f"cannot convert {have}-channel images to {channels} channels; use 1 or 3")


def channel_stats(mean: tuple[float, ...], std: tuple[float, ...],
                  channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std after the same conversion as :func:`convert_channels`.

    Grey -> RGB repeats the statistic. RGB -> grey takes the luminance-weighted mean (exact) and the
    luminance-weighted std (exact when the channels are perfectly correlated, an upper bound otherwise;
    good enough for a Normalize layer).
    """
    if len(mean) == channels:
        return tuple(mean), tuple(std)
    if len(mean) == 1:
        return tuple(mean) * channels, tuple(std) * channels
    if channels == 1:
        return ((sum(w * m for w, m in zip(LUMA, mean)),), (sum(w * s for w, s in zip(LUMA, std)),))
    raise ConfigError(f"cannot convert {len(mean)}-channel statistics to {channels} channels")


def mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 (N, C, H, W) images, in [0, 1] units
    (the statistics of a Normalize layer for data that brings none). A constant channel gets
    std 1/255, so normalising never divides by zero."""
    c = images.shape[1]
    total, squares = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for i in range(0, images.shape[0], _CHUNK):
        x = images[i:i + _CHUNK].to(torch.float64).div_(255)
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
    count = max(1, images.shape[0] * images.shape[2] * images.shape[3])
    mean = total / count
    std = (squares / count - mean * mean).clamp_(min=0).sqrt_().clamp_(min=1 / 255)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def same_channels(images: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
    """uint8 (C, H, W) images with 1 or 3 channels -> all 3 when any is colour (grey repeated),
    else all 1; returns them and how many grey images were repeated to RGB."""
    if all(im.shape[0] == images[0].shape[0] for im in images):
        return images, 0
    grey = sum(1 for im in images if im.shape[0] == 1)
    return [im.repeat(3, 1, 1) if im.shape[0] == 1 else im for im in images], grey
