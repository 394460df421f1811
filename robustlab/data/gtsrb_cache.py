"""The .npz cache of decoded, resized GTSRB arrays, so the 39k .ppm files are decoded once.

The cache sits beside the data (``<base>/robustlab-cache/``); when that folder is read-only (a system
location) it goes to the download cache instead. Each file records a key built from the list of
source files, their sizes and modification times, the split and the size; a cache whose key does not
match, or that cannot be read, is rebuilt (:mod:`robustlab.data.decoded_cache`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import numpy as np

from . import decoded_cache
from .resolve import cache_dir

VERSION = 1


def key(files: list[Path], base: Path, split: str, size: int) -> str:
    """A digest of what the cache was built from: file names, sizes, mtimes, split, size."""
    return decoded_cache.files_key(f"v{VERSION}|{split}|{size}", files, base)


def _paths(base: Path, split: str, size: int, where: Optional[str] = None) -> list[Path]:
    """Beside the data, then the download cache; only ``where`` (--cache-dir) when given."""
    name = f"{split}-{size}.npz"
    tag = hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:16]
    if where is not None:
        return [Path(where).expanduser() / "gtsrb-cache" / tag / name]
    return [base / "robustlab-cache" / name, cache_dir() / "gtsrb-cache" / tag / name]


def load(base: Path, split: str, size: int, expect_key: str,
         where: Optional[str] = None) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The cached (images, labels) if a cache with the same key is readable, else None."""
    def check(arrays: dict[str, np.ndarray]) -> None:
        images, labels = arrays["images"], arrays["labels"]
        n = labels.shape[0]
        if images.dtype != np.uint8 or images.shape != (n, 3, size, size) or labels.ndim != 1:
            raise ValueError(f"arrays of shape {images.shape} / {labels.shape}")

    found = decoded_cache.read(_paths(base, split, size, where), expect_key, check, "GTSRB")
    if found is None:
        return None
    arrays = found[1]
    return arrays["images"], arrays["labels"].astype(np.int64)


def save(base: Path, split: str, size: int, cache_key: str, images: np.ndarray,
         labels: np.ndarray, where: Optional[str] = None) -> Optional[Path]:
    """Write the cache atomically to the first writable location; None (and a log line) if none is."""
    return decoded_cache.write(_paths(base, split, size, where), cache_key,
                               {"images": images, "labels": labels}, "GTSRB")
