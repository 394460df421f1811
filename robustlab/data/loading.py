"""``load(name, split, ...)``: a dataset by name, in memory, at the requested size and channels."""
from __future__ import annotations

import os
from typing import Any, Optional, Union

from .._checks import check_int
from ..errors import ConfigError
from .dataset import ImageDataset
from .pixels import channel_stats, convert_channels, pad_zeros, resize
from .resolve import resolve
from .specs import DATASETS

SPLITS = ("train", "test")


def _check_channels(channels: Optional[int]) -> None:
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ConfigError(f"channels must be 1, 3 or None (the dataset's own), got {channels!r}")


def dataset_info(name: str, channels: Optional[int] = None) -> dict[str, Any]:
    """What a model needs to know about a dataset, without touching any file.

    Returns a dict with name, num_classes, channels, size (32), mean, std (per channel, for
    ``channels`` if given), flip_ok, default_augment and class_names. Unknown names raise
    UnknownNameError listing the known ones.
    """
    spec = DATASETS.get(name)
    _check_channels(channels)
    c = channels or spec.channels
    mean, std = channel_stats(spec.mean, spec.std, c)
    return {"name": spec.name, "num_classes": spec.num_classes, "channels": c, "size": 32,
            "mean": mean, "std": std, "flip_ok": spec.flip_ok,
            "default_augment": spec.default_augment, "class_names": list(spec.class_names)}


def load(name: str, split: str = "train", root: Optional[Union[str, os.PathLike]] = None,
         size: int = 32, channels: Optional[int] = None, download: bool = True) -> ImageDataset:
    """Load a dataset by name fully into memory.

    Args:
        name: one of ``DATASETS`` (cifar10, gtsrb, fashion-mnist, mnist, synthetic).
        split: "train" or "test" (hold validation out of train with :func:`robustlab.data.split`).
        root: a directory holding the dataset (``--data-root``); when None, the system locations
            and then the download cache are tried (see :mod:`robustlab.data.resolve`).
        size: output height and width. Grey 28x28 sets are first padded to 32x32 with zeros;
            any other size is reached by an antialiased bilinear resize.
        channels: 1 or 3 to convert (luminance / repetition), None to keep the dataset's own.
        download: allow a torchvision download into the cache as the last resort.
    Returns:
        An :class:`ImageDataset` (uint8 images, int64 labels, normalisation statistics).
    Raises:
        DataError when the files cannot be found or are corrupt; ConfigError for bad arguments.
    """
    spec = DATASETS.get(name)
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}; hold a "
                          "validation set out of train with robustlab.data.split")
    check_int("size", size, 2)
    _check_channels(channels)
    raw = spec.read(None, split, size) if spec.generated else \
        resolve(spec, split, root, size, download)
    images = pad_zeros(raw.images, spec.pad)
    images = resize(images, size)
    c = channels or spec.channels
    images = convert_channels(images, c)
    mean, std = channel_stats(spec.mean, spec.std, c)
    return ImageDataset(images.contiguous(), raw.labels, name=spec.name,
                        num_classes=spec.num_classes,
                        class_names=raw.class_names or spec.class_names, mean=mean, std=std,
                        flip_ok=spec.flip_ok, default_augment=spec.default_augment)
