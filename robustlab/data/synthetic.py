"""A tiny generated dataset for unit tests: 10 classes of coloured shapes and stripes on noise.

Class ``c`` draws shape ``c % 5`` (square, disc, horizontal stripes, vertical stripes, cross) in
colour ``PALETTE[c]`` at a random position and size on a dark noisy background, so a small CNN
learns it in a few epochs. Fully deterministic: the train and test splits have fixed seeds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from .specs import DatasetSpec, Raw, register

SIZES = {"train": 500, "test": 200}
SEEDS = {"train": 0, "test": 1}
SHAPES = ("square", "disc", "h-stripes", "v-stripes", "cross")
PALETTE = ((0.9, 0.2, 0.2), (0.2, 0.9, 0.2), (0.2, 0.3, 0.95), (0.95, 0.9, 0.2), (0.9, 0.3, 0.9),
           (0.2, 0.9, 0.9), (0.95, 0.6, 0.1), (0.6, 0.3, 0.1), (0.95, 0.95, 0.95), (0.5, 0.5, 0.5))
CLASSES = tuple(f"{SHAPES[c % 5]}-{c}" for c in range(10))


def generate(n: int, seed: int, size: int = 32) -> Raw:
    """``n`` images (uint8 (n, 3, size, size)) with balanced labels, deterministic from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")  # (S, S)
    cy, cx = u(0.35, 0.65, n, 1, 1) * size, u(0.35, 0.65, n, 1, 1) * size
    r = u(0.2, 0.3, n, 1, 1) * size
    dy, dx = ys - cy, xs - cx  # (n, S, S)
    box = (dy.abs() <= r) & (dx.abs() <= r)
    period = max(2, size // 8)
    masks = torch.stack([
        box,
        dy ** 2 + dx ** 2 <= r ** 2,
        box & ((ys // period) % 2 == 0),
        box & ((xs // period) % 2 == 0),
        box & ((dy.abs() <= r / 3) | (dx.abs() <= r / 3)),
    ])  # (5, n, S, S)
    mask = masks[labels % 5, torch.arange(n)].unsqueeze(1)  # (n, 1, S, S)
    colour = torch.tensor(PALETTE)[labels] + u(-0.08, 0.08, n, 3)  # (n, 3)
    background = u(0.0, 0.25, n, 3, 1, 1)
    img = torch.where(mask, colour[:, :, None, None], background)
    img = img + 0.04 * torch.randn(img.shape, generator=g)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return Raw(images, labels.to(torch.int64))


def read(root: Optional[Path], split: str, size: int) -> Raw:
    """The fixed ``split`` (500 train / 200 test images); ``root`` is ignored."""
    return generate(SIZES[split], SEEDS[split])


register(DatasetSpec(
    name="synthetic", num_classes=10, channels=3, class_names=CLASSES, mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25), flip_ok=True, default_augment="cifar", read=read, generated=True,
), help="synthetic: 500/200 generated 32x32 coloured shapes, 10 classes, for tests (no files)")
