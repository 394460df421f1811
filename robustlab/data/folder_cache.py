"""The .npz cache of a ``folder`` dataset's decoded, resized images, so they are decoded once.

The cache sits inside the folder (``ROOT/.robustlab-cache/``, hidden, so never taken for a class),
or in ``cache_dir`` when one is given; when the folder is read-only it goes to the download cache.
Its key is a digest of every image's relative path, size and modification time and of the image
size, so adding, removing or touching a file rebuilds it (:mod:`robustlab.data.decoded_cache`).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from . import decoded_cache
from .resolve import cache_dir as download_cache

_log = logging.getLogger(__name__)
VERSION = 1
FOLDER = ".robustlab-cache"


def key(files: list[Path], root: Path, size: int) -> str:
    """A digest of what the cache is built from: every file's relative path, size and mtime."""
    return decoded_cache.files_key(f"folder v{VERSION}|size {size}", files, root)


def paths(root: Path, size: int, cache_dir: Optional[str]) -> list[Path]:
    """Where the cache may be, in the order tried."""
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    name = f"folder-{size}.npz"
    if cache_dir is not None:
        return [Path(cache_dir).expanduser() / f"{root.name}-{tag}" / name]
    return [root / FOLDER / name, download_cache() / "folder-cache" / tag / name]


def load(places: list[Path], expect_key: str, n: int, size: int) -> Optional[np.ndarray]:
    """The cached uint8 (n, C, size, size) images when a readable cache has ``expect_key``."""
    def check(arrays: dict[str, np.ndarray]) -> None:
        images = arrays["images"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != n \
                or images.shape[1] not in (1, 3) or images.shape[2:] != (size, size):
            raise ValueError(f"images of shape {images.shape}")

    found = decoded_cache.read(places, expect_key, check, "image")
    if found is None:
        return None
    path, arrays = found
    _log.info("read %d decoded images from the cache %s", n, path)
    return arrays["images"]


def save(places: list[Path], cache_key: str, images: np.ndarray, what: str) -> Optional[Path]:
    """Write the cache atomically to the first writable place and say so; None if none is."""
    path = decoded_cache.write(places, cache_key, {"images": images}, "image")
    if path is not None:
        _log.info("decoded %s; cached them in %s (later loads read it; a changed file "
                  "rebuilds it)", what, path)
    return path
