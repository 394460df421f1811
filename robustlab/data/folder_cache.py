"""The .npz cache of a ``folder`` dataset's decoded, resized images, so they are decoded once.

The cache sits inside the folder (``ROOT/.robustlab-cache/``, hidden, so never taken for a class),
or in ``cache_dir`` when one is given; when the folder is read-only it goes to the download cache.
Its key is a digest of every image's relative path, size and modification time and of the image
size, so adding, removing or touching a file rebuilds it. Writes are atomic.
"""
from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from .._io import atomic_path
from .resolve import cache_dir as download_cache

_log = logging.getLogger(__name__)
VERSION = 1
FOLDER = ".robustlab-cache"


def key(files: list[Path], root: Path, size: int) -> str:
    """A digest of what the cache is built from: every file's relative path, size and mtime."""
    h = hashlib.sha256(f"folder v{VERSION}|size {size}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def paths(root: Path, size: int, cache_dir: Optional[str]) -> list[Path]:
    """Where the cache may be, in the order tried."""
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    name = f"folder-{size}.npz"
    if cache_dir is not None:
        return [Path(cache_dir).expanduser() / f"{root.name}-{tag}" / name]
    return [root / FOLDER / name, download_cache() / "folder-cache" / tag / name]


def load(places: list[Path], expect_key: str, n: int, size: int) -> Optional[np.ndarray]:
    """The cached uint8 (n, C, size, size) images when a readable cache has ``expect_key``."""
    for path in places:
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != expect_key:
                    _log.info("the image cache %s is out of date; decoding again", path)
                    continue
                images = z["images"]
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != n \
                    or images.shape[1] not in (1, 3) or images.shape[2:] != (size, size):
                raise ValueError(f"images of shape {images.shape}")
            _log.info("read %d decoded images from the cache %s", n, path)
            return images
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            _log.warning("the image cache %s is unreadable (%s: %s); decoding again", path,
                         type(e).__name__, e)
    return None


def save(places: list[Path], cache_key: str, images: np.ndarray, what: str) -> Optional[Path]:
    """Write the cache atomically to the first writable place and say so; None if none is."""
    for path in places:
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:  # a file handle: np.savez would append .npz to a name
                    np.savez(fh, images=images, key=np.array(cache_key))
            _log.info("decoded %s; cached them in %s (later loads read it; a changed file "
                      "rebuilds it)", what, path)
            return path
        except OSError as e:
            _log.info("cannot write the image cache %s (%s); trying the next place", path, e)
    _log.warning("decoded %s but found no writable place for the cache; they will be decoded "
                 "again next time (pass --cache-dir DIR)", what)
    return None
