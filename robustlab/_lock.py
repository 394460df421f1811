"""Exclusive, process-lifetime locks on run folders and results files.

Two commands writing the same ``--out`` would interleave their files and one run would be lost
without a word. Every command that writes a run folder or a results file therefore holds an OS
file lock (``flock``) on it for as long as it runs; the OS releases it when the process ends,
however it ends (Ctrl-C, SIGKILL, a crash), so a stale lock never blocks anyone. A second command
gets one clear line: "... is in use by process N".

The lock file is hidden (``DIR/.robustlab.lock`` for a folder, ``.NAME.lock`` beside a file) and
removed on release, so a finished or failed command leaves nothing behind.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

try:  # POSIX; elsewhere locking is best-effort (none)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_HELD: dict[Path, "Lock"] = {}  # lock file -> the lock this process holds on it


def lock_file_for(target: str | os.PathLike, is_dir: bool) -> Path:
    """Where the lock of ``target`` lives: inside a run folder, or beside a results file."""
    target = Path(target)
    return target / ".robustlab.lock" if is_dir else target.parent / f".{target.name}.lock"


class Lock:
    """An exclusive lock on ``target`` (a run folder when ``is_dir``, else a results file).

    ``with Lock(...)``, or :meth:`acquire` / :meth:`release`. Not re-entrant: a second lock on a
    target this process already holds is refused like any other.
    """

    def __init__(self, target: str | os.PathLike, *, is_dir: bool, what: str = "") -> None:
        self.target = Path(target)
        self.path = lock_file_for(self.target, is_dir)
        self.what = what or str(self.target)
        self._fd: int | None = None

    def acquire(self) -> "Lock":
        key = self.path.resolve()
        if key in _HELD:
            raise ConfigError(f"{self.what} is in use by this process (process {os.getpid()}); "
                              "finish the run that writes there first")
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(f"cannot write to {self.what}: {exc.strerror} "
                                  f"({exc.filename}); choose another --out") from None
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_pid(fd)
                os.close(fd)
                by = f"process {owner}" if owner else "another process"
                raise ConfigError(f"{self.what} is in use by {by} (another robustlab command "
                                  "writing there); wait for it to finish or choose another "
                                  "--out") from None
            # the file we locked must still be the one at the path: a releasing holder unlinks
            # it, and a lock on an unlinked file protects nothing
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        _HELD[key] = self
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(self.path.resolve(), None)
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: nobody can lock it now
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def is_main_rank() -> bool:
    """Under torchrun only rank 0 writes, so only rank 0 locks (the others would block it)."""
    return int(os.environ.get("RANK", "0")) == 0
