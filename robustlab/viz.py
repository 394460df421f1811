"""Image grids for reports: rows of images with a label each (e.g. the SSR report's Fig. 3:
perturbed / purified / clean). Written atomically as PNG with matplotlib's Agg canvas (no pyplot,
so no global backend state is touched)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ._checks import check_images
from ._io import atomic_path
from .errors import InputError


def _mosaic(row: torch.Tensor, pad: int) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (H, N*W + (N-1)*pad, C) with white gaps, on the CPU."""
    n, c, h, w = row.shape
    out = torch.ones(c, h, n * w + (n - 1) * pad)
    for i in range(n):
        out[:, :, i * (w + pad): i * (w + pad) + w] = row[i]
    return out.permute(1, 2, 0)


def save_image_rows(rows: Sequence[torch.Tensor], path: str | Path, *,
                    labels: Sequence[str] | None = None, title: str | None = None,
                    pad: int = 2, scale: float = 0.5) -> Path:
    """Write a PNG with one row of images per tensor in ``rows``.

    Args:
        rows: tensors (N, C, H, W) in [0, 1], all the same shape; C is 1 (grey) or 3.
        path: the .png to write (atomically).
        labels: one label per row, shown on its left (e.g. "perturbed", "purified", "clean").
        title: optional figure title.
        pad: pixels between images. scale: inches per 32 pixels.
    Returns:
        The path written.
    """
    if not rows:
        raise InputError("save_image_rows needs at least one row of images")
    shape = rows[0].shape
    for i, row in enumerate(rows):
        check_images(row, name=f"row {i}")
        if row.shape != shape:
            raise InputError(f"all rows must have the same shape; row 0 is {tuple(shape)}, "
                             f"row {i} is {tuple(row.shape)}")
    if shape[1] not in (1, 3):
        raise InputError(f"images must have 1 or 3 channels to be drawn, got {shape[1]}")
    if labels is not None and len(labels) != len(rows):
        raise InputError(f"{len(rows)} rows but {len(labels)} labels")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mosaics = [_mosaic(r.detach().float().cpu(), pad) for r in rows]
    h, w = mosaics[0].shape[:2]
    inch = scale / 32
    fig = Figure(figsize=(w * inch + 1.2, len(rows) * (h * inch + 0.15) + (0.4 if title else 0.1)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for i, (ax, m) in enumerate(zip(axes, mosaics)):
        grey = m.shape[2] == 1
        ax.imshow((m[:, :, 0] if grey else m).numpy(), cmap="gray" if grey else None, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None:
            ax.set_ylabel(labels[i], rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path
