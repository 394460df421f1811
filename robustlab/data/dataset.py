"""The in-memory dataset every loader returns, and seeded subsets of it (``take``, ``split``)."""
from __future__ import annotations

import numbers
from typing import Sequence, Union

import torch

from ..errors import ConfigError, InputError

Indices = Union[torch.Tensor, Sequence[int]]


class ImageDataset(torch.utils.data.Dataset):
    """A whole dataset held in memory as uint8 tensors, plus the metadata models and trainers need.

    Attributes:
        images: uint8 (N, C, H, W), already at the requested size and channel count.
        labels: int64 (N,) class indices in [0, num_classes).
        name, num_classes, class_names: what the classes are.
        flip_ok: whether horizontal flips preserve the label (False for gtsrb and digits).
        default_augment: the name of the dataset's augmentation preset (see ``AUGMENTATIONS``).
        mean, std: per-channel statistics for the model's Normalize layer.

    ``ds[i]`` is ``(float32 (C, H, W) in [0, 1], int label)``; trainers should use
    :func:`robustlab.data.batches`, which avoids the per-item path entirely.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, name: str, num_classes: int,
                 class_names: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 flip_ok: bool, default_augment: str) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise InputError(f"{name}: images must be a uint8 (N, C, H, W) tensor, got "
                             f"{getattr(images, 'dtype', type(images).__name__)} "
                             f"{tuple(getattr(images, 'shape', ()))}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise InputError(f"{name}: {images.shape[0]} images but labels of shape "
                             f"{tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise InputError(f"{name}: labels must lie in [0, {num_classes - 1}], got "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise InputError(f"{name}: mean/std need one value per channel ({images.shape[1]})")
        self.images = images
        self.labels = labels
        self.name = name
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.flip_ok = bool(flip_ok)
        self.default_augment = default_augment

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float().div_(255), int(self.labels[i])

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (f"ImageDataset({self.name!r}, n={len(self)}, shape=({c}, {h}, {w}), "
                f"classes={self.num_classes})")

    def select(self, indices: Indices) -> "ImageDataset":
        """A new dataset with the same metadata holding the samples at ``indices`` (in that order)."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise InputError(f"{self.name}: indices must lie in [0, {n - 1}], got "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        idx = (idx % max(n, 1)).to(self.images.device)  # the images may be on the GPU (place)
        return ImageDataset(self.images.index_select(0, idx),
                            self.labels.index_select(0, idx.to(self.labels.device)),
                            name=self.name, num_classes=self.num_classes,
                            class_names=self.class_names, mean=self.mean, std=self.std,
                            flip_ok=self.flip_ok, default_augment=self.default_augment)


def _count(what: str, v: Union[int, float], n: int, allow_all: bool) -> int:
    """Turn a count (int >= 1) or a fraction (float in (0, 1]) of ``n`` samples into a count."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ConfigError(f"{what} must be a count (int >= 1) or a fraction in (0, 1), got {v!r}")
    if isinstance(v, numbers.Integral):
        k = int(v)
        if k < 1:
            raise ConfigError(f"{what} must be at least 1, got {k}")
    else:
        f = float(v)
        if not (0.0 < f <= 1.0 if allow_all else 0.0 < f < 1.0):
            bound = "(0, 1]" if allow_all else "(0, 1)"
            raise ConfigError(f"{what} as a fraction must lie in {bound}, got {f!r}; "
                              "pass an int for a count of samples")
        k = max(1, int(round(f * n)))
    limit = n if allow_all else n - 1
    if k > limit:
        raise ConfigError(f"{what} asks for {k} samples but the dataset has only {n}"
                          + ("" if allow_all else " and at least one must remain for training"))
    return k


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def take(ds: ImageDataset, n: Union[int, float], seed: int = 0) -> ImageDataset:
    """A seeded random subset (``--subset``): ``n`` samples if an int >= 1, else a fraction in (0, 1].

    The chosen samples keep their original order. Raises ConfigError for 0, negatives, more samples
    than the dataset has, or a fraction above 1.
    """
    k = _count("subset", n, len(ds), allow_all=True)
    return ds.select(_perm(len(ds), seed)[:k].sort().values)


def split(ds: ImageDataset, val: Union[int, float],
          seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Hold out a seeded validation set: returns ``(train, val)``, disjoint, covering ``ds``.

    ``val`` is a count (int >= 1, < len(ds)) or a fraction in (0, 1). Both parts keep the
    original order.
    """
    k = _count("validation split", val, len(ds), allow_all=False)
    perm = _perm(len(ds), seed)
    return ds.select(perm[k:].sort().values), ds.select(perm[:k].sort().values)
