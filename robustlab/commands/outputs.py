"""The results files of one command: checked and locked before any work, written all together.

``evaluate`` can run for hours before it writes ``--out``; finding then that ``--out`` is a
directory, sits under a file or cannot be written loses the run. So every command that writes
results opens them first::

    with Outputs(file=args.out) as outputs:      # or dir=..., or prefix=...
        ...compute...
        outputs.write(lambda: write_json(args.out, result), keep=result)

- before the work: the target is checked (not a directory where a file is meant, not under a
  file, its folder creatable and writable) and locked for the command's life (``robustlab._lock``);
- at the end: every file is written in one :func:`~robustlab._io.file_group` (all appear or none
  does); when a write still fails (disk full), ``keep`` is printed to stdout so the computed
  results survive, and the error says so in one line;
- a command that fails leaves no folder it created and no lock file behind.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .._io import WriteError, file_group, make_dirs, remove_empty
from .._lock import Lock, is_main_rank
from ..errors import ConfigError


class Outputs:
    """Open the results of one command: ``file`` (a results file), ``prefix`` (PREFIX.csv/.json/
    .png and the like) or ``dir`` (a folder of results); ``flag`` names the option in messages.
    None of them: nothing is written, and nothing is checked."""

    def __init__(self, *, file: str | None = None, prefix: str | None = None,
                 dir: str | None = None, flag: str = "--out") -> None:
        given = [(p, kind) for p, kind in ((file, "file"), (prefix, "prefix"), (dir, "dir"))
                 if p is not None]
        if len(given) > 1:
            raise ValueError("Outputs takes one of file, prefix, dir")
        self.flag = flag
        self.target, self.kind = (Path(given[0][0]), given[0][1]) if given else (None, None)
        self._created: list[Path] = []
        self._lock: Lock | None = None

    def __enter__(self) -> "Outputs":
        if self.target is None or not is_main_rank():
            return self
        folder = self.target if self.kind == "dir" else self.target.parent
        if self.kind == "dir" and self.target.exists() and not self.target.is_dir():
            raise ConfigError(f"{self.flag} {self.target} is a file; give a directory")
        if self.kind == "file" and self.target.is_dir():
            raise ConfigError(f"{self.flag} {self.target} is a directory; give a file name such "
                              f"as {self.target / 'results.json'}")
        self._created = make_dirs(folder, self.flag)
        try:
            self._lock = Lock(self.target, is_dir=self.kind == "dir",
                              what=f"{self.flag} {self.target}").acquire()
        except BaseException:
            self._remove_created()
            raise
        return self

    def write(self, writer: Callable[[], Any], keep: Any = None) -> None:
        """Run ``writer`` (which writes every results file) so that its files appear together;
        if a write fails, print ``keep`` (JSON-able) to stdout and raise one WriteError."""
        try:
            with file_group():
                writer()
        except WriteError as exc:
            if keep is None:
                raise
            print(json.dumps(keep, indent=1, default=str))
            raise WriteError(f"{exc}; nothing was written, the results are printed on stdout "
                             "above") from None
        self._created = []  # the folders now hold results: keep them

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if exc_type is not None:
            self._remove_created()

    def _remove_created(self) -> None:
        remove_empty(self._created)
        self._created = []
