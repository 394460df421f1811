"""The ``npz`` dataset: your own arrays in NumPy ``.npz`` files, given with ``--data-root``.

    --data-root FILE.npz   x: uint8 images (N, H, W, C), C 1 or 3 (or (N, H, W) for grey);
                           y: integer labels (N,); optionally class_names: (K,) strings.
                           Split into train / val / test by ``split_sizes`` (seeded).
    --data-root DIR        DIR/train.npz, DIR/val.npz, DIR/test.npz (those present), each as
                           above: those splits.

num_classes is len(class_names) when a file has them (files must agree), else the largest label
+ 1 over every file. Images are resized to ``size`` (antialiased bilinear, as every loader) and
share one channel count (grey files repeated to RGB when another is colour). mean/std are those
of the training split; the set is never flipped and its default augmentation is "none".
Files are read with ``allow_pickle=False``: an object array is refused, never unpickled.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .options import SPLIT_NAMES, partition
from .pixels import mean_std, resize
from .specs import DatasetSpec, Raw, register

_log = logging.getLogger(__name__)
EXPECT = ("FILE.npz with x: uint8 images (N, H, W, C) and y: integer labels (N,), or a folder "
          "with train.npz / val.npz / test.npz")


def _sources(root: Optional[Path]) -> dict[str, Path]:
    """split -> file ("" for one file to be partitioned)."""
    if root is None:
        raise DataError(f"the npz dataset needs --data-root: {EXPECT}")
    root = Path(root).expanduser()
    if root.is_file():
        return {"": root}
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist; the npz dataset needs {EXPECT}")
    found = {s: root / f"{s}.npz" for s in SPLIT_NAMES if (root / f"{s}.npz").is_file()}
    if not found:
        raise DataError(f"{root} holds no train.npz, val.npz or test.npz; pass --data-root "
                        "FILE.npz, or put the splits in those files")
    return found


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise DataError(f"{path} has no {' or '.join(map(repr, missing))} array (it has: "
                                f"{', '.join(keys) or 'nothing'}); the npz dataset needs x: uint8 "
                                "images (N, H, W, C) and y: integer labels (N,)")
            return z["x"], z["y"], (z["class_names"] if "class_names" in keys else None)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None


def read_file(path: Path) -> tuple[torch.Tensor, torch.Tensor, Optional[tuple[str, ...]]]:
    """uint8 (N, C, H, W) images, int64 labels and the class names (if any) of one file."""
    x, y, names = _arrays(path)
    if x.dtype != np.uint8:
        raise DataError(f"{path}: x must be uint8 (0-255), got {x.dtype}; convert images in "
                        "[0, 1] with (x * 255).round().astype(np.uint8)")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{path}: x must be (N, H, W, C) with C 1 or 3 (channels last), got "
                        f"shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu":
        raise DataError(f"{path}: y must hold one integer label per image ({x.shape[0]},), got "
                        f"{y.dtype} {y.shape}")
    if y.size and int(y.min()) < 0:
        raise DataError(f"{path}: labels must be class indices >= 0, found {int(y.min())}")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise DataError(f"{path}: class_names must be a list of strings, got {names.dtype} "
                        f"{names.shape}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return images, torch.from_numpy(y.astype(np.int64)), \
        (tuple(str(n) for n in names) if names is not None else None)


def _class_names(files: dict[str, Path], read: dict[str, tuple]) -> tuple[str, ...]:
    given = {s: r[2] for s, r in read.items() if r[2] is not None}
    if len(set(given.values())) > 1:
        raise DataError(f"the files of {', '.join(str(files[s]) for s in given)} name different "
                        "class_names; give every file the same list")
    top = max((int(r[1].max()) for r in read.values() if r[1].numel()), default=-1)
    names = next(iter(given.values()), None) or tuple(str(i) for i in range(top + 1))
    for s, (_, labels, _) in read.items():
        if labels.numel() and int(labels.max()) >= len(names):
            raise DataError(f"{files[s]}: labels go up to {int(labels.max())} but class_names "
                            f"names {len(names)} classes; labels must lie in [0, "
                            f"{len(names) - 1}]")
    return names


def _joined(read: dict[str, tuple], size: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Every file's images resized and in one channel count, concatenated; positions per file."""
    parts = {s: resize(r[0], size) for s, r in read.items()}
    if len({t.shape[1] for t in parts.values()}) > 1:
        _log.warning("the npz files mix grey and colour images; the grey ones are repeated to "
                     "RGB (pass --channels 1 for grey)")
        parts = {s: t.repeat(1, 3, 1, 1) if t.shape[1] == 1 else t for s, t in parts.items()}
    positions, start = {}, 0
    for s, t in parts.items():
        positions[s] = torch.arange(start, start + len(t))
        start += len(t)
    return torch.cat(list(parts.values())), torch.cat([r[1] for r in read.values()]), positions


def _prepared(root, size, split_sizes, split_seed):
    files = _sources(root)
    read = {s: read_file(p) for s, p in files.items()}
    names = _class_names(files, read)
    images, labels, positions = _joined(read, size)
    if "" in files:
        parts = partition(len(labels), split_sizes, split_seed, where=str(files[""]))
    elif split_sizes is not None:
        raise ConfigError(f"{root} holds one .npz file per split ({', '.join(files)}); split "
                          "sizes apply only to a single .npz file: drop --split-sizes")
    else:
        parts = positions
    train = parts.get("train")
    stats = mean_std(images[train] if train is not None and len(train) else images)
    return root, images, labels, names, parts, stats


def read(root: Optional[Path], split: str, size: int, *, split_sizes=None,
         split_seed: int = 0) -> Raw:
    """The ``split`` of the .npz data at ``root`` at ``size`` x ``size`` (see the module doc)."""
    root, images, labels, names, parts, (mean, std) = _prepared(root, size, split_sizes,
                                                                split_seed)
    if split not in parts:
        raise DataError(f"{root} has no {split}.npz (it has "
                        f"{', '.join(f'{s}.npz' for s in parts)})")
    idx = parts[split]
    if not len(idx):
        raise ConfigError(f"the {split} split of {root} is empty: the split sizes give it no "
                          "image (set them with --split-sizes TRAIN,VAL,TEST)")
    return Raw(images[idx].contiguous(), labels[idx], names, num_classes=len(names), mean=mean,
               std=std)


def describe(root: Optional[Path], size: int, *, split_sizes=None,
             split_seed: int = 0) -> dict[str, Any]:
    """num_classes, channels, class_names, mean and std of the data (training split's stats)."""
    _, images, _, names, _, (mean, std) = _prepared(root, size, split_sizes, split_seed)
    return {"num_classes": len(names), "channels": int(images.shape[1]),
            "class_names": list(names), "mean": mean, "std": std}


register(DatasetSpec(
    name="npz", num_classes=0, channels=0, class_names=(), mean=(), std=(), flip_ok=False,
    default_augment="none", read=read, describe=describe, from_data=True, splits=SPLIT_NAMES,
    options=("split_sizes", "split_seed"), sized_by_reader=True, expect=EXPECT,
), help="your own arrays (--data-root FILE.npz or DIR of train/val/test.npz): x uint8 (N, H, W, "
        "C), y labels, optional class_names; split by --split-sizes when one file")
