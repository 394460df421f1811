"""The trainers' fast path: mini-batches straight from the in-memory uint8 tensor."""
from __future__ import annotations

from typing import Iterator, Optional, Union

import torch

from .._checks import check_int
from ..errors import ConfigError
from .dataset import ImageDataset
from .presets import refuse_flips


def batches(ds: ImageDataset, batch_size: int, *, shuffle: bool,
            generator: Optional[torch.Generator] = None, augment: Optional[str] = None,
            device: Union[str, torch.device] = "cpu",
            drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches for one epoch over ``ds``.

    No DataLoader and no worker processes: each batch is indexed out of ``ds.images``, moved to
    ``device`` as uint8, turned into float32 in [0, 1] there, and augmented as one batched tensor op.
    A dataset already on the GPU (:func:`robustlab.data.place`) is indexed there and never leaves
    it; one in pinned host memory is gathered into pinned buffers and copied asynchronously.

    Args:
        ds: an :class:`ImageDataset`.
        batch_size: samples per batch (the last one may be smaller unless ``drop_last``).
        shuffle: visit the samples in a random order drawn from ``generator``.
        generator: the only source of randomness (order, then each batch's augmentation, in that
            order); pass the same generator across epochs. When None, a generator seeded with 0 is
            used, so the order is still reproducible (and the same every call).
        augment: an ``AUGMENTATIONS`` preset name, or None for none (``ds.default_augment`` names
            the dataset's usual one). A flipping preset on data with ``flip_ok=False`` raises
            ConfigError before any batch is made.
        device: where ``x`` and ``y`` are put.
        drop_last: skip a final incomplete batch.
    Returns:
        An iterator of (x float32 (B, C, H, W) in [0, 1], y int64 (B,)) on ``device``.
    """
    if not isinstance(ds, ImageDataset):
        raise ConfigError(f"batches needs an ImageDataset (from robustlab.data.load), got "
                          f"{type(ds).__name__}")
    check_int("batch_size", batch_size, 1)
    aug = None if augment in (None, "none") else refuse_flips(augment, ds.flip_ok, ds.name)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return _epoch(ds, batch_size, shuffle, generator, aug, torch.device(device), drop_last)


def _epoch(ds, batch_size, shuffle, generator, aug, device, drop_last):
    n = len(ds)
    order = None
    if shuffle:  # drawn on the generator's device, then put where the images are (once)
        order = torch.randperm(n, generator=generator, device=generator.device)
        order = order.to(ds.images.device)
    staged = device.type == "cuda" and ds.images.device.type == "cpu" and ds.images.is_pinned()
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if drop_last and stop - start < batch_size:
            break
        if order is None:  # a slice of pinned memory is pinned: copied asynchronously
            xb, yb = ds.images[start:stop], ds.labels[start:stop].clone()
        elif staged:
            xb, yb = _gather_pinned(ds.images, order[start:stop]), \
                _gather_pinned(ds.labels, order[start:stop])
        else:
            idx = order[start:stop]
            xb, yb = ds.images.index_select(0, idx), ds.labels.index_select(0, idx)
        # move uint8 (4x fewer bytes than float), convert on the device
        x = xb.to(device, non_blocking=True).to(torch.float32).div_(255)  # (B, C, H, W) in [0, 1]
        y = yb.to(device, non_blocking=True)
        if aug is not None:
            x = aug.fn(x, generator)
        yield x, y


def _gather_pinned(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``src[idx]`` written straight into pinned memory, so that its copy to the GPU is
    asynchronous (an index_select of pinned memory is pageable). The host allocator keeps the
    buffer until the copy that reads it has run."""
    out = torch.empty((idx.numel(), *src.shape[1:]), dtype=src.dtype, pin_memory=True)
    return torch.index_select(src, 0, idx, out=out)
