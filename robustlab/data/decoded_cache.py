"""A keyed .npz cache of decoded, resized images, so that image files are decoded once.

Shared by the ``folder`` dataset and GTSRB. Each knows where its caches may be (a list of places
tried in order); the cache's key is a digest of every source file's relative path, size and
modification time plus what else decides the arrays (split, image size), so adding, removing or
touching a file rebuilds it. A cache that is out of date or unreadable is decoded again; writes
are atomic.
"""
from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .._io import atomic_path

_log = logging.getLogger(__name__)


def files_key(header: str, files: list[Path], root: Path) -> str:
    """A digest of ``header`` and every file's path relative to ``root``, size and mtime."""
    h = hashlib.sha256(f"{header}\n".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def read(places: list[Path], expect_key: str, check: Callable[[dict[str, np.ndarray]], None],
         what: str) -> Optional[tuple[Path, dict[str, np.ndarray]]]:
    """(where, arrays) of the first readable cache in ``places`` whose key is ``expect_key`` and
    that ``check`` accepts (it raises ValueError otherwise); None when there is none. ``what``
    names the cache in log lines ("image", "GTSRB")."""
    for path in places:
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) != expect_key:
                    _log.info("the %s cache %s is out of date; decoding again", what, path)
                    continue
                arrays = {name: z[name] for name in z.files if name != "key"}
            check(arrays)
            return path, arrays
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            _log.warning("the %s cache %s is unreadable (%s: %s); decoding again", what, path,
                         type(e).__name__, e)
    return None


def write(places: list[Path], cache_key: str, arrays: dict[str, np.ndarray],
          what: str) -> Optional[Path]:
    """Write ``arrays`` and the key atomically to the first writable place; None (and a warning
    that they will be decoded again) when none is."""
    for path in places:
        try:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:  # a file handle: np.savez would append .npz to a name
                    np.savez(fh, **arrays, key=np.array(cache_key))
            return path
        except OSError as e:
            _log.info("cannot write the %s cache %s (%s); trying the next place", what, path, e)
    _log.warning("found no writable place for the %s cache; the images will be decoded again "
                 "next time (pass --cache-dir DIR)", what)
    return None
