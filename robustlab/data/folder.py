"""The ``folder`` dataset: your own images, one sub-folder per class (torchvision's ImageFolder
layout), given with ``--data-root DIR``.

    DIR/<class>/*.png                     split into train / val / test by ``split_sizes`` (seeded)
    DIR/{train,val,test}/<class>/*.png    those splits, as they are on disk

Class names are the folder names, sorted (by value when every name is a whole number, so folder
``7`` is class 7); every split uses the same class indices. Images (PNG/JPEG/PPM/BMP, any size,
grey or colour, nested folders allowed, hidden files and other files skipped) are decoded once,
resized to ``size`` x ``size`` and cached (:mod:`robustlab.data.folder_cache`). The set has 1
channel when every image is grey, else 3 (grey images repeated, with a note). mean/std are those
of the training split. Nothing is known about mirror symmetry, so it is never flipped and its
default augmentation is "none" (choose one with ``--augment``).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import ConfigError, DataError
from . import folder_cache
from .images import EXTENSIONS, FORMATS, decode_file
from .options import SPLIT_NAMES, partition
from .pixels import mean_std, same_channels
from .specs import DatasetSpec, Raw, register

_log = logging.getLogger(__name__)
LAYOUT = "one sub-folder of images per class (DIR/<class>/*.png), optionally under train/ val/ test/"


@dataclass(frozen=True)
class Layout:
    """What a folder holds: every image in a fixed order, its class, and the split sub-folders."""

    files: list[Path]
    labels: torch.Tensor  # int64 (N,)
    class_names: tuple[str, ...]
    splits: Optional[dict[str, range]]  # positions in ``files`` per split sub-folder, or None


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"cannot read the folder {folder} ({e.strerror or e})") from None


def _class_dirs(folder: Path) -> list[Path]:
    entries = _visible(folder)
    subs = [p for p in entries if p.is_dir()]
    if not subs:
        loose = sum(1 for p in entries if p.suffix.lower() in EXTENSIONS)
        hint = f" (it holds {loose} images directly: move them into a folder per class)" \
            if loose else ""
        raise DataError(f"{folder} has no class sub-folders{hint}; the folder dataset needs "
                        f"{LAYOUT}")
    return subs


def _images_in(class_dir: Path, skipped: list[Path]) -> list[Path]:
    found = []
    for p in sorted(class_dir.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(class_dir).parts) or not p.is_file():
            continue
        (found if p.suffix.lower() in EXTENSIONS else skipped).append(p)
    if not found:
        raise DataError(f"class folder {class_dir} holds no images ({FORMATS}); add images or "
                        "remove the folder")
    return found


def _sorted_names(names: set[str]) -> tuple[str, ...]:
    if names and all(n.isdigit() for n in names):
        return tuple(sorted(names, key=lambda n: (int(n), n)))
    return tuple(sorted(names))


def scan(root: Path) -> Layout:
    """The images, labels, class names and split sub-folders under ``root`` (no decoding)."""
    dirs = [p for p in _visible(root) if p.is_dir()]
    split_dirs = [p for p in dirs if p.name in SPLIT_NAMES]
    others = [p.name for p in dirs if p.name not in SPLIT_NAMES]
    if split_dirs and others:
        raise DataError(f"{root} mixes split sub-folders ({', '.join(p.name for p in split_dirs)})"
                        f" with other folders ({', '.join(others[:3])}); put every class folder "
                        "under train/ val/ test/, or use no split folders at all")
    groups = ({p.name: _class_dirs(p) for p in sorted(split_dirs, key=lambda p:
                                                      SPLIT_NAMES.index(p.name))}
              if split_dirs else {"": _class_dirs(root)})
    names = _sorted_names({d.name for ds in groups.values() for d in ds})
    index = {n: i for i, n in enumerate(names)}
    files: list[Path] = []
    labels: list[int] = []
    splits, skipped = {}, []
    for split, class_dirs in groups.items():
        start = len(files)
        for d in class_dirs:
            found = _images_in(d, skipped)
            files += found
            labels += [index[d.name]] * len(found)
        splits[split] = range(start, len(files))
    if skipped:
        _log.info("%s: skipped %d file(s) that are not %s images (first: %s)", root, len(skipped),
                  FORMATS, skipped[0])
    return Layout(files, torch.tensor(labels, dtype=torch.int64), names,
                  splits if split_dirs else None)


def _parts(layout: Layout, root: Path, split_sizes, split_seed: int) -> dict[str, torch.Tensor]:
    """Positions of each split's images in ``layout.files``."""
    if layout.splits is None:
        return partition(len(layout.files), split_sizes, split_seed, where=str(root))
    if split_sizes is not None:
        raise ConfigError(f"{root} has split sub-folders ({', '.join(layout.splits)}); split "
                          "sizes apply only to a folder without them: drop --split-sizes")
    return {s: torch.arange(r.start, r.stop) for s, r in layout.splits.items()}


def _pick(parts: dict[str, torch.Tensor], split: str, root: Path) -> torch.Tensor:
    if split not in parts:
        have = ", ".join(f"{s}/" for s in parts)
        raise DataError(f"{root} has no {split}/ sub-folder (it has {have})")
    if not len(parts[split]):
        raise ConfigError(f"the {split} split of {root} is empty: the split sizes give it no "
                          "image (set them with --split-sizes TRAIN,VAL,TEST)")
    return parts[split]


def _decode_all(files: list[Path], size: int, root: Path) -> torch.Tensor:
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
        images = list(pool.map(lambda f: decode_file(f, size), files))
    images, grey = same_channels(images)
    if grey:
        _log.warning("%s: %d of the %d images are grey and the others colour; the grey ones are "
                     "repeated to RGB (pass --channels 1 for grey)", root, grey, len(images))
    return torch.stack(images)


def decoded(layout: Layout, root: Path, size: int, cache_dir: Optional[str]) -> torch.Tensor:
    """uint8 (N, C, size, size) images of ``layout.files``, from the cache when it is current."""
    cache_key = folder_cache.key(layout.files, root, size)
    places = folder_cache.paths(root, size, cache_dir)
    cached = folder_cache.load(places, cache_key, len(layout.files), size)
    if cached is not None:
        return torch.from_numpy(cached)
    t0 = time.perf_counter()
    images = _decode_all(layout.files, size, root)
    what = f"{len(layout.files)} images of {root} in {time.perf_counter() - t0:.1f} s"
    folder_cache.save(places, cache_key, images.numpy(), what)
    return images


def _root(root: Optional[Path]) -> Path:
    if root is None:
        raise DataError(f"the folder dataset needs --data-root DIR: {LAYOUT}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} is not a directory; the folder dataset needs {LAYOUT}")
    return root


def _prepared(root, size, split_sizes, split_seed, cache_dir, split: Optional[str] = None):
    """(root, layout, parts, images, the positions of ``split``): a missing or empty split and
    bad split settings fail before anything is decoded."""
    root = _root(root)
    layout = scan(root)
    parts = _parts(layout, root, split_sizes, split_seed)
    idx = _pick(parts, split, root) if split is not None else None
    return root, layout, parts, decoded(layout, root, size, cache_dir), idx


def _stats(images: torch.Tensor, parts: dict[str, torch.Tensor]):
    train = parts.get("train")
    return mean_std(images[train] if train is not None and len(train) else images)


def read(root: Optional[Path], split: str, size: int, *, split_sizes=None, split_seed: int = 0,
         cache_dir: Optional[str] = None) -> Raw:
    """The ``split`` images of the folder ``root`` at ``size`` x ``size`` (see the module doc)."""
    root, layout, parts, images, idx = _prepared(root, size, split_sizes, split_seed, cache_dir,
                                                 split)
    mean, std = _stats(images, parts)
    return Raw(images[idx].contiguous(), layout.labels[idx], layout.class_names,
               num_classes=len(layout.class_names), mean=mean, std=std)


def describe(root: Optional[Path], size: int, *, split_sizes=None, split_seed: int = 0,
             cache_dir: Optional[str] = None) -> dict[str, Any]:
    """num_classes, channels, class_names, mean and std of the folder (training split's stats)."""
    _, layout, parts, images, _ = _prepared(root, size, split_sizes, split_seed, cache_dir)
    mean, std = _stats(images, parts)
    return {"num_classes": len(layout.class_names), "channels": int(images.shape[1]),
            "class_names": list(layout.class_names), "mean": mean, "std": std}


register(DatasetSpec(
    name="folder", num_classes=0, channels=0, class_names=(), mean=(), std=(), flip_ok=False,
    default_augment="none", read=read, describe=describe, from_data=True, splits=SPLIT_NAMES,
    options=("split_sizes", "split_seed", "cache_dir"), sized_by_reader=True, expect=LAYOUT,
), help="your own images (--data-root DIR): one sub-folder per class, PNG/JPEG/PPM/BMP, resized "
        "to --size, split by --split-sizes or by train/ val/ test/ sub-folders; decoded once and "
        "cached")
