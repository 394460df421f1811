"""Data brought by the user, turned into what robustlab computes on.

Every function that takes data (``rl.evaluate``, ``sweep``, the trainers' ``data=``) accepts:

- a robustlab :class:`ImageDataset` (from :func:`robustlab.data.load`);
- a torch ``Dataset`` (map-style or iterable) yielding ``(image, label)``: the image a (C, H, W)
  tensor (float in [0, 1], or uint8) or a PIL image, the label an integer class index;
- a ``DataLoader`` yielding ``(x, y)`` batches;
- an ``(x, y)`` pair of tensors: x (N, C, H, W) float in [0, 1] or uint8, y (N,) integers.

:func:`as_tensors` keeps float images exactly as given (evaluation); :func:`as_dataset` builds an
ImageDataset (uint8, what the trainers batch from) and refuses float images that are not on the
1/255 grid rather than rounding them.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..errors import InputError
from .collect import ACCEPTED, collect, exact_uint8
from .dataset import ImageDataset
from .pixels import channel_stats, convert_channels, mean_std, resize

__all__ = ["ACCEPTED", "as_dataset", "as_tensors"]


def as_tensors(data: Any, *, limit: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` (None: all) images and labels of ``data`` (any accepted kind, see the
    module docstring) as tensors: uint8 and PIL images become float32 in [0, 1]; float images are
    kept exactly (dtype and values: nothing is rounded). Labels are not range-checked here.

    Raises: InputError for anything but the accepted kinds, a sample that is not an (image,
    label) pair, or shapes that do not fit (N, C, H, W) images with (N,) labels.
    """
    if isinstance(data, ImageDataset):
        x, y = data.images[:limit], data.labels[:limit]
    else:
        x, y, _ = collect(data, limit)
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    if x.dim() != 4 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise InputError(f"expected images (N, C, H, W) and labels (N,), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    return x, y


def _labels(y: torch.Tensor, what: str) -> torch.Tensor:
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"{what}: labels must be a (N,) tensor of integer class indices, got "
                         f"{y.dtype} {tuple(y.shape)}")
    return y.to(torch.int64)


def _converted(ds: ImageDataset, channels: Optional[int], size: Optional[int],
               num_classes: Optional[int]) -> ImageDataset:
    images = resize(ds.images, size) if size else ds.images
    images = convert_channels(images, channels) if channels else images
    mean, std = channel_stats(ds.mean, ds.std, images.shape[1])
    k = num_classes or ds.num_classes
    names = ds.class_names if len(ds.class_names) == k else [str(i) for i in range(k)]
    return ImageDataset(images, ds.labels, name=ds.name, num_classes=k, class_names=names,
                        mean=mean, std=std, flip_ok=ds.flip_ok, default_augment=ds.default_augment)


def as_dataset(data: Any, *, name: Optional[str] = None, num_classes: Optional[int] = None,
               class_names: Optional[Sequence[str]] = None, channels: Optional[int] = None,
               size: Optional[int] = None, mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None, flip_ok: bool = False,
               default_augment: str = "none") -> ImageDataset:
    """``data`` (any accepted kind, see the module docstring) as an :class:`ImageDataset`.

    Float images must lie on the 1/255 grid (within 1e-3 of a step, which covers float32 k/255):
    they are stored as those uint8 values. Float images off the grid are refused with an
    InputError, never rounded; evaluate them as they are with ``rl.evaluate`` (which keeps floats
    exact) or quantise them yourself.

    Args:
        name: the dataset's name in messages and checkpoints (default: the type of ``data``).
        num_classes: default len(class_names), else the largest label + 1. Labels outside
            [0, num_classes) raise InputError.
        class_names: default "0", "1", ...
        channels: 1 or 3 to convert (luminance / repetition); size: resize to size x size
            (antialiased bilinear), also images of mixed sizes.
        mean, std: the Normalize statistics a trainer builds its model with (default: computed
            from the images). flip_ok, default_augment: as for the built-in sets (default: never
            flipped, no augmentation).
    An ImageDataset passed in is returned as it is, converted only as asked.
    """
    if isinstance(data, ImageDataset):
        if channels or size or num_classes:
            return _converted(data, channels, size, num_classes)
        return data
    x, y, what = collect(data, None, size, to_uint8=True)
    images = exact_uint8(x, what)
    images = resize(images, size) if size and images.dim() == 4 else images
    if images.dim() != 4:
        raise InputError(f"{what}: expected images (N, C, H, W), got {tuple(images.shape)}")
    images = convert_channels(images, channels) if channels else images
    labels = _labels(y, what)
    k = num_classes or (len(class_names) if class_names else
                        int(labels.max()) + 1 if labels.numel() else 1)
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    own_mean, own_std = mean_std(images) if mean is None or std is None else (mean, std)
    return ImageDataset(images.contiguous(), labels, name=name or what, num_classes=k,
                        class_names=names, mean=mean if mean is not None else own_mean,
                        std=std if std is not None else own_std, flip_ok=flip_ok,
                        default_augment=default_augment)
