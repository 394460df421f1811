"""The .npz cache of decoded, resized GTSRB arrays, so the 39k .ppm files are decoded once.

The cache sits beside the data (``<base>/robustlab-cache/``); when that folder is read-only (a system
location) it goes to the download cache instead. Each file records a key built from the list of
source files, their sizes and modification times, the split and the size; a cache whose key does not
match, or that cannot be read, is rebuilt. Writes are atomic.
"""
from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import atomic_path
from .resolve import cache_dir

_log = logging.getLogger(__name__)
VERSION = 1


def key(files: list[Path], base: Path, split: str, size: int) -> str:
    """A digest of what the cache was built from: file names, sizes, mtimes, split, size."""
    h = hashlib.sha256(f"v{VERSION}|{split}|{size}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(base)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


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
    for path in _paths(base, split, size, where):
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != expect_key:
                    _log.info("GTSRB cache %s is stale; rebuilding", path)
                    continue
                images, labels = z["images"], z["labels"]
            n = labels.shape[0]
            if images.dtype != np.uint8 or images.shape != (n, 3, size, size) or labels.ndim != 1:
                raise ValueError(f"arrays of shape {images.shape} / {labels.shape}")
            return images, labels.astype(np.int64)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            _log.warning("GTSRB cache %s is unreadable (%s: %s); rebuilding", path,
                         type(e).__name__, e)
    return None


def save(base: Path, split: str, size: int, cache_key: str, images: np.ndarray,
         labels: np.ndarray, where: Optional[str] = None) -> Optional[Path]:
    """Write the cache atomically to the first writable location; None (and a log line) if none is."""
    for path in _paths(base, split, size, where):
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:  # a file handle: np.savez would append .npz to a name
                    np.savez(fh, images=images, labels=labels, key=np.array(cache_key))
            return path
        except OSError as e:
            _log.info("cannot write GTSRB cache %s (%s); trying the next location", path, e)
    _log.warning("no writable location for the GTSRB cache; images will be decoded again next time")
    return None
