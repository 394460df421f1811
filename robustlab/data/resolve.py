"""Where a dataset's files come from: an explicit root, a system location, or a torchvision download.

The order is fixed (DESIGN.md, Data): (1) an explicit ``root`` (``--data-root``), which is never
silently skipped; (2) the system locations in :data:`SYSTEM_LOCATIONS`; (3) the download cache
(``$ROBUSTLAB_DATA`` or ``~/.cache/robustlab/data``), filled by torchvision when downloading is allowed
and ``ROBUSTLAB_OFFLINE`` is not ``1``. When all fail, one :class:`DataError` says what each way tried.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from ..errors import DataError
from .specs import DataMissing, DatasetSpec, Raw

_log = logging.getLogger(__name__)

# Standard system-wide locations per dataset, tried in order. Debian's ``dataset-fashion-mnist``
# package installs the flat idx files in /usr/share/datasets/fashion-mnist; the other entries follow
# the same convention. Extend this table for other distributions or shared cluster paths.
SYSTEM_LOCATIONS: dict[str, list[str]] = {
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
    "mnist": ["/usr/share/datasets/mnist"],
    "cifar10": ["/usr/share/datasets/cifar10"],
    "gtsrb": ["/usr/share/datasets/gtsrb"],
}


def cache_dir() -> Path:
    """The download cache: ``$ROBUSTLAB_DATA`` if set, else ``~/.cache/robustlab/data``."""
    env = os.environ.get("ROBUSTLAB_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robustlab" / "data"


def offline() -> bool:
    """True when ``ROBUSTLAB_OFFLINE=1`` forbids downloads."""
    return os.environ.get("ROBUSTLAB_OFFLINE", "") == "1"


def run_download(spec: DatasetSpec, split: str, dest: Path) -> None:
    """Fetch ``spec`` into ``dest`` with torchvision (tests replace this function)."""
    if spec.download is None:
        raise DataError(f"{spec.name} has no download")
    dest.mkdir(parents=True, exist_ok=True)
    spec.download(dest, split)


def _explicit(spec: DatasetSpec, split: str, root: Path, size: int, options: dict) -> Raw:
    if not root.is_dir():
        raise DataError(f"data root {root} is not a directory; pass --data-root DIR containing "
                        f"{spec.expect}")
    try:
        return spec.read(root, split, size, **options)
    except DataMissing as e:
        raise DataError(f"data root {root} does not contain {spec.name} ({split} split): {e}. "
                        f"Expected inside it: {spec.expect}") from None


def _download_step(spec: DatasetSpec, split: str, size: int, download: bool,
                   options: dict) -> tuple[Raw | None, str]:
    cache = cache_dir()
    try:  # an earlier download may already be there
        return spec.read(cache, split, size, **options), ""
    except DataMissing as e:
        not_cached = str(e)
    if not download:
        return None, f"not in the cache ({not_cached}) and downloading is disabled"
    if offline():
        return None, f"not in the cache ({not_cached}) and ROBUSTLAB_OFFLINE=1"
    if spec.download is None:
        return None, f"not in the cache ({not_cached}) and torchvision cannot download {spec.name}"
    _log.info("downloading %s (%s) into %s", spec.name, split, cache)
    try:
        run_download(spec, split, cache)
    except Exception as e:  # network errors come in many types; report, do not crash
        return None, f"download failed: {type(e).__name__}: {e}"
    try:
        return spec.read(cache, split, size, **options), ""
    except DataMissing as e:
        return None, f"download finished but the files are not there: {e}"


def resolve(spec: DatasetSpec, split: str, root: Optional[str | os.PathLike], size: int,
            download: bool = True, options: Optional[dict] = None) -> Raw:
    """Read ``spec``'s ``split`` from the first location that has it (see the module docstring);
    ``options`` go to its reader (e.g. gtsrb's cache_dir)."""
    options = options or {}
    if root is not None:
        return _explicit(spec, split, Path(root).expanduser(), size, options)
    tried = []
    for loc in SYSTEM_LOCATIONS.get(spec.name, []):
        path = Path(loc)
        if not path.is_dir():
            tried.append(f"{path}: does not exist")
            continue
        try:
            return spec.read(path, split, size, **options)
        except DataMissing as e:
            tried.append(f"{path}: {e}")
    raw, why = _download_step(spec, split, size, download, options)
    if raw is not None:
        return raw
    system = "; ".join(tried) if tried else "none known for this dataset"
    hint = f"install it: {spec.install}" if spec.install else \
        "copy it to one of the system locations in robustlab.data.resolve.SYSTEM_LOCATIONS"
    raise DataError(
        f"cannot find dataset {spec.name} ({split} split). Tried (1) --data-root: not given; "
        f"(2) system locations: {system}; (3) torchvision download into {cache_dir()}: {why}. "
        f"Fix one of: pass --data-root DIR containing {spec.expect}; or {hint}; or connect to the "
        f"internet (ROBUSTLAB_OFFLINE unset) so torchvision can download it "
        f"(set ROBUSTLAB_DATA to choose where)")
