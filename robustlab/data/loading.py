"""``load(name, split, ...)``: a dataset by name, in memory, at the requested size and channels."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

from .._checks import check_int
from ..errors import ConfigError
from .dataset import ImageDataset
from .options import SPLIT_NAMES, check_split_sizes
from .pixels import channel_stats, convert_channels, pad_zeros, resize
from .resolve import resolve
from .specs import DATASETS, DatasetSpec, Raw

SPLITS = SPLIT_NAMES  # every split a dataset may have; DatasetSpec.splits says which it has
_FLAGS = {"split_sizes": "--split-sizes", "split_seed": "--split-seed", "cache_dir": "--cache-dir"}
_DEFAULTS = {"split_sizes": None, "split_seed": 0, "cache_dir": None}
_WHERE = {"split_sizes": "folder and npz data without their own splits",
          "split_seed": "folder and npz data without their own splits",
          "cache_dir": "folder and gtsrb, which cache decoded images"}


def _check_channels(channels: Optional[int]) -> None:
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ConfigError(f"channels must be 1, 3 or None (the dataset's own), got {channels!r}")


def _options(spec: DatasetSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The load options ``spec``'s reader takes; one it does not take, set, is a ConfigError."""
    out = {}
    for key, value in given.items():
        if key in spec.options:
            out[key] = check_split_sizes(value) if key == "split_sizes" and value is not None \
                else value
        elif value != _DEFAULTS[key]:
            raise ConfigError(f"{_FLAGS[key]} ({key}) does not apply to {spec.name}: it applies "
                              f"to {_WHERE[key]}")
    return out


def dataset_info(name: str, channels: Optional[int] = None,
                 root: Optional[Union[str, os.PathLike]] = None, *, size: int = 32,
                 split_sizes=None, split_seed: int = 0,
                 cache_dir: Optional[str] = None) -> dict[str, Any]:
    """What a model needs to know about a dataset.

    Returns a dict with name, num_classes, channels, size, mean, std (per channel, for
    ``channels`` if given), flip_ok, default_augment and class_names. Built-in sets touch no file;
    a set that takes its classes from its files (folder, npz) reads them (from the decoded-image
    cache when current) and needs ``root``, else ConfigError. Unknown names raise
    UnknownNameError listing the known ones.
    """
    spec = DATASETS.get(name)
    _check_channels(channels)
    opts = _options(spec, {"split_sizes": split_sizes, "split_seed": split_seed,
                           "cache_dir": cache_dir})
    if spec.from_data:
        if root is None:
            raise ConfigError(f"{name} takes its classes, channels and statistics from its files: "
                              "pass root (--data-root)")
        own = spec.describe(Path(root).expanduser(), size, **opts)
    else:
        own = {"num_classes": spec.num_classes, "channels": spec.channels,
               "class_names": list(spec.class_names), "mean": spec.mean, "std": spec.std}
    c = channels or own["channels"]
    mean, std = channel_stats(tuple(own["mean"]), tuple(own["std"]), c)
    return {"name": spec.name, "num_classes": own["num_classes"], "channels": c, "size": size,
            "mean": mean, "std": std, "flip_ok": spec.flip_ok,
            "default_augment": spec.default_augment, "class_names": list(own["class_names"])}


def _check_split(spec: DatasetSpec, split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split not in spec.splits:
        raise ConfigError(f"{spec.name} has no {split} split (its splits: "
                          f"{', '.join(spec.splits)}); hold a validation set out of train with "
                          "robustlab.data.split (the trainers' val setting)")


def _read(spec: DatasetSpec, split: str, root, size: int, download: bool, opts: dict) -> Raw:
    """The reader's output: your own files at ``root``, generated data, or the first location
    that holds a built-in set (:func:`robustlab.data.resolve.resolve`)."""
    if spec.from_data:
        return spec.read(Path(root).expanduser() if root is not None else None, split, size,
                         **opts)
    if spec.generated:
        return spec.read(None, split, size)
    return resolve(spec, split, root, size, download, opts)


def load(name: str, split: str = "train", root: Optional[Union[str, os.PathLike]] = None,
         size: int = 32, channels: Optional[int] = None, download: bool = True, *,
         split_sizes=None, split_seed: int = 0, cache_dir: Optional[str] = None) -> ImageDataset:
    """Load a dataset by name fully into memory.

    Args:
        name: one of ``DATASETS`` (cifar10, gtsrb, fashion-mnist, mnist, synthetic, and your own
            data: folder, npz).
        split: "train" or "test"; "val" too for folder and npz data (the built-in sets: hold
            validation out of train with :func:`robustlab.data.split`).
        root: a directory holding the dataset (``--data-root``); when None, the system locations
            and then the download cache are tried (see :mod:`robustlab.data.resolve`). folder and
            npz data need it (the class folders; the .npz file or a folder of split files).
        size: output height and width. Grey 28x28 sets are first padded to 32x32 with zeros;
            any other size is reached by an antialiased bilinear resize.
        channels: 1 or 3 to convert (luminance / repetition), None to keep the dataset's own.
        download: allow a torchvision download into the cache as the last resort.
        split_sizes, split_seed: the seeded (train, val, test) partition of folder and npz data
            that has no split sub-folders or files (see :class:`robustlab.data.DataOptions`).
        cache_dir: where folder and gtsrb keep their decoded images (None: beside the data).
    Returns:
        An :class:`ImageDataset` (uint8 images, int64 labels, normalisation statistics).
    Raises:
        DataError when the files cannot be found or are corrupt; ConfigError for bad arguments
        (an option the dataset does not take, a split it does not have).
    """
    spec = DATASETS.get(name)
    _check_split(spec, split)
    check_int("size", size, 2)
    _check_channels(channels)
    opts = _options(spec, {"split_sizes": split_sizes, "split_seed": split_seed,
                           "cache_dir": cache_dir})
    raw = _read(spec, split, root, size, download, opts)
    images = resize(pad_zeros(raw.images, spec.pad), size)
    c = channels or images.shape[1]
    images = convert_channels(images, c)
    own = (raw.mean, raw.std) if spec.from_data else (spec.mean, spec.std)
    mean, std = channel_stats(tuple(own[0]), tuple(own[1]), c)
    return ImageDataset(images.contiguous(), raw.labels, name=spec.name,
                        num_classes=raw.num_classes if spec.from_data else spec.num_classes,
                        class_names=raw.class_names or spec.class_names, mean=mean, std=std,
                        flip_ok=spec.flip_ok, default_augment=spec.default_augment)
