"""Atomic file writes and provenance (library version, git commit).

Nothing robustlab writes is ever half-written: content goes to a temporary file in the same
directory, is flushed to disk, and is renamed over the target.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError, RobustlabError


class WriteError(RobustlabError, OSError):
    """A file could not be written (disk full, read-only, permissions); nothing was half-written."""


_GROUP: ContextVar[list | None] = ContextVar("robustlab_file_group", default=None)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    Inside :func:`file_group` the rename waits for the group. A failed write (disk full, read-only
    directory; also the errors safetensors raises for them) becomes a :class:`WriteError` naming
    the file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give what open() would
    except OSError as exc:
        raise WriteError(f"could not write {path}: {exc.strerror or exc}") from None
    tmp_path = Path(tmp)
    group = _GROUP.get()
    try:
        try:
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())  # some writers (safetensors) recreate the file
        except Exception as exc:
            if isinstance(exc, RobustlabError) or not _is_write_failure(exc):
                raise
            raise WriteError(f"could not write {path}: {_reason(exc)}") from None
        if group is not None:
            group.append((tmp_path, path))
            tmp_path = None
        else:
            os.replace(tmp_path, path)
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def file_group() -> Iterator[None]:
    """Files written (atomically) inside the block appear together when it ends, or not at all:
    each is staged under its temporary name and all are renamed once the block succeeds; on an
    error every staged file is removed. A sweep's CSV, JSON and PNG are such a group."""
    staged: list[tuple[Path, Path]] = []
    token = _GROUP.set(staged)
    try:
        yield
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _GROUP.reset(token)
    for tmp, target in staged:
        os.replace(tmp, target)


def _is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    return type(exc).__name__ == "SafetensorError"  # its I/O errors carry the OS reason as text


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    for known in ("No space left on device", "Read-only file system", "Permission denied",
                  "File too large", "Disk quota exceeded"):
        if known.lower() in text.lower():
            return known
    return text.splitlines()[0] if text else type(exc).__name__


def make_dirs(path: str | os.PathLike, flag: str = "--out") -> list[Path]:
    """mkdir -p ``path``; return the folders created (outermost first) so that a failed command
    can remove them. A path under a file, or one that cannot be created or written, is one
    ConfigError naming ``flag``."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"{flag} {path} cannot be created: {p} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path} cannot be created: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        for d in missing:
            d.rmdir()
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        why = " (a read-only file system)" if read_only else ""
        raise ConfigError(f"{flag} {path} is not writable{why}; choose another {flag}")
    return list(reversed(missing))


@contextmanager
def new_dirs(path: str | os.PathLike, flag: str = "--out") -> Iterator[list[Path]]:
    """:func:`make_dirs` for the block's duration: if the block fails, the folders it created are
    removed again (those left empty), so a failed command leaves no trace."""
    created = make_dirs(path, flag)
    try:
        yield created
    except BaseException:
        remove_empty(created)
        raise


def remove_empty(created: list[Path]) -> None:
    """Remove folders from ``make_dirs`` (innermost first) while they are empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(obj: Any) -> Any:
    """The JSON form of what json cannot write itself: numpy/torch scalars, paths, sets, tuples."""
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (ties a weights file to the JSON that describes it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_commit() -> str | None:
    """The commit of the robustlab source tree, with ``+dirty`` when it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def provenance() -> dict[str, Any]:
    """Version information saved beside every checkpoint and result."""
    import torch

    from . import __version__

    return {"robustlab": __version__, "torch": torch.__version__, "git_commit": git_commit()}
