"""A run's output directory: its resolved config, per-epoch metrics, what it depends on, and
protection against losing a run.

Used as a context manager by the run scaffold every trainer shares (:mod:`.run`)::

    with RunDir(out, "train", cfg, resume=resume, overwrite=overwrite) as run_dir:
        run_dir.depend("init", cfg.init)          # files the weights depend on (sha256)
        ...build data, model, method...
        run_dir.depend_data("train data", data)   # the exact training images and labels
        run_dir.create()
        start, extra = run_dir.resume_from(cfg.epochs, model=model, optimizer=optimizer)
        for epoch in ...:
            with run_dir.saving(epoch):
                run_dir.append_metrics(line); save weights and state
            run_dir.commit_epoch()

What it guarantees:
- one command at a time: the folder is locked for the run's whole life (``robustlab._lock``);
- a run that fails before its first saved epoch leaves the folder as it found it (new files
  removed, and with ``overwrite`` the replaced run put back); the replaced run is deleted only
  once the new one has saved an epoch;
- ``resume`` continues only the same run: same settings, same dependency files and data (by
  checksum), a state whose epoch makes sense; a torn last line of ``metrics.jsonl`` (SIGKILL)
  is dropped; temporary files left by a killed process are removed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .._io import (WriteError, json_default, make_dirs, provenance, remove_empty, sha256_file,
                   write_json, write_text)
from .._lock import Lock, is_main_rank
from ..config import to_dict
from ..errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

# Files a run owns; --overwrite replaces exactly these (and grid_epoch*.png), nothing else.
OWNED = ("config.json", "metrics.jsonl", "model.safetensors", "model.json", "last.safetensors",
         "last.json", "best.safetensors", "best.json", "purifier.safetensors", "purifier.json",
         "critic.safetensors", "critic.json", "encoder.safetensors", "encoder.json")
OWNED_GLOBS = ("grid_epoch*.png",)
_REPLACED = ".replaced"  # the run being overwritten, kept until the new one saves an epoch


class RunDir:
    """Create or reopen ``path`` for a run of ``kind`` with config ``cfg``.

    A directory that already holds a run is refused unless ``resume`` (the configs must match)
    or ``overwrite`` (the previous run is replaced once the new one has saved an epoch) is given.
    A directory that holds only the config of a run that never saved an epoch is reused. With
    ``defer`` (the default) construction only checks, and :meth:`create` writes ``config.json``.
    """

    def __init__(self, path: str | Path, kind: str, cfg: Any, *, resume: bool = False,
                 overwrite: bool = False, defer: bool = True) -> None:
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pass one")
        self.path = Path(path)
        self.cfg = cfg
        self.config_dict = {"kind": kind, **to_dict(cfg)}
        self.resume, self.overwrite = resume, overwrite
        self._main = is_main_rank()
        self._deps: dict[str, Any] = {}
        self._old_deps: dict[str, Any] = {}
        self._created_dirs: list[Path] = []
        self._before: set[str] = set()
        self._committed = False
        self._created = False
        self._lock: Lock | None = None
        self._open()
        if not defer:
            self.create()

    # -- opening: lock, tidy, check -------------------------------------------------------------
    def _open(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file, not a run directory; choose another "
                              "--out")
        if not self._main:
            return
        self._created_dirs = make_dirs(self.path)
        try:
            self._lock = Lock(self.path, is_dir=True, what=f"run directory {self.path}").acquire()
            self._tidy()
            self._before = _names(self.path)
            self._check_existing()
        except BaseException:
            self._close(failed=True)
            raise

    def _tidy(self) -> None:
        """Remove temporary files a killed process left; finish or undo an interrupted overwrite."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        replaced = self.path / _REPLACED
        if replaced.is_dir():
            if _has_state(self.path):  # the new run saved an epoch: the old one is gone for good
                shutil.rmtree(replaced)
            else:  # the overwrite never saved anything: put the old run back
                _remove_owned(self.path)
                for f in replaced.iterdir():
                    os.replace(f, self.path / f.name)
                replaced.rmdir()
                log.warning("%s: an interrupted --overwrite was undone; the previous run is back",
                            self.path)

    def _check_existing(self) -> None:
        cfg_file = self.path / "config.json"
        if not cfg_file.exists():
            if self.resume:
                log.info("nothing to resume in %s: starting a new run", self.path)
            return
        try:
            doc = json.loads(cfg_file.read_text())
            old = doc.get("config", {})
            self._old_deps = doc.get("dependencies", {}) or {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise ConfigError(f"{cfg_file} is unreadable ({exc}); remove it or use another "
                              "--out") from None
        started = _has_state(self.path)
        if self.overwrite:
            return
        if not started:
            lines = self.read_metrics()
            if lines and self.resume:
                raise ConfigError(
                    f"{self.path} has metrics for {len(lines)} epoch(s) but no training state "
                    "(last.json and last.safetensors) to resume from: it was deleted or moved; "
                    "--overwrite starts the run again")
            if lines:
                raise ConfigError(f"{self.path} already holds a run; pass --overwrite to replace "
                                  "it (or choose another --out)")
            log.info("%s holds a run that never finished an epoch: starting it again", self.path)
            self._old_deps = {}
            return
        if not self.resume:
            raise ConfigError(f"{self.path} already holds a run; pass --resume to continue it "
                              "or --overwrite to replace it (or choose another --out)")
        defaults = _field_defaults(self.cfg)
        old, now = _comparable(old, defaults), _comparable(self.config_dict, defaults)
        if old != now:
            diff = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
            raise ConfigError(f"{self.path} holds a different run (it differs in: "
                              f"{', '.join(diff)}); --resume needs the same settings, or use "
                              "--overwrite / another --out")

    # -- dependencies ---------------------------------------------------------------------------
    def depend(self, name: str, path: str | os.PathLike | None) -> None:
        """Record the sha256 of a file the run's weights depend on (an extractor, an --init or
        --source checkpoint); on resume, refuse when it changed. None: no such file."""
        if path is None:
            return
        p = Path(path)
        if p.suffix not in (".safetensors", ".json") and p.with_suffix(".safetensors").is_file():
            p = p.with_suffix(".safetensors")
        if not p.is_file():
            return  # the loader that reads it reports a missing file in its own words
        self._record(name, {"path": str(path), "sha256": sha256_file(p)})

    def depend_data(self, name: str, data: Any, labels: bool = True) -> None:
        """Record a checksum of the images (and ``labels``) the run trains on; refuse a resume on
        different data (another dataset version, another --data-root). Label-free runs
        (pre-training) pass ``labels=False``: they never read them."""
        digest = hashlib.sha256()
        for t in (data.images, data.labels) if labels else (data.images,):
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        self._record(name, {"n": len(data), "sha256": digest.hexdigest()})

    def _record(self, name: str, entry: dict[str, Any]) -> None:
        old = self._old_deps.get(name)
        if self.resume and old is not None and old.get("sha256") != entry["sha256"]:
            where = f" ({entry['path']})" if "path" in entry else ""
            raise ConfigError(f"cannot resume {self.path}: the {name}{where} has changed since the "
                              "run started (its checksum differs); put the original back, or "
                              "start again with --overwrite")
        self._deps[name] = entry

    # -- writing --------------------------------------------------------------------------------
    def create(self) -> "RunDir":
        """Set a replaced run aside (with overwrite), then write this run's config.json. Called
        once the run's data, model and method are built, so a run that fails to start leaves
        nothing behind."""
        if not self._main:
            return self
        if self.overwrite and (self.path / "config.json").exists():
            replaced = self.path / _REPLACED
            replaced.mkdir(exist_ok=True)
            for f in _owned_files(self.path):
                os.replace(f, replaced / f.name)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / "config.json", {"config": self.config_dict,
                                               "dependencies": self._deps,
                                               "provenance": provenance()})
        self._created = True
        return self

    def resume_from(self, epochs: int, **state: Any) -> tuple[int, dict[str, Any]]:
        """With resume, restore the modules/optimisers in ``state`` (``load_state``'s keywords)
        from ``last.*`` and return (epochs done, extras); else (0, {}). Metrics past the state's
        epoch are dropped."""
        from .state import load_state

        start, extra = 0, {}
        if self.resume and _has_state(self.path):
            start, extra, _ = load_state(self.path / "last", **state)
            if not 0 <= start <= epochs:
                raise CheckpointError(f"the training state in {self.path} claims {start} epochs "
                                      f"done, but the run has {epochs}; it is damaged: start "
                                      "again with --overwrite")
            log.info("resuming %s after epoch %d", self.path, start)
        self.truncate_metrics(start)
        return start, extra

    @contextmanager
    def saving(self, epoch: int) -> Iterator[None]:
        """Around the writes of epoch ``epoch + 1``: a failed write (disk full) says which epoch
        is still intact."""
        try:
            yield
        except WriteError as exc:
            kept = (f"the state of epoch {epoch} is intact: free some space and continue with "
                    "--resume") if epoch else "no epoch had been saved yet"
            raise WriteError(f"{exc}; {kept}") from None

    def commit_epoch(self) -> None:
        """An epoch's weights and state are saved: from now on a failure keeps them, and a run
        replaced by --overwrite is gone."""
        self._committed = True
        replaced = self.path / _REPLACED
        if self._main and replaced.is_dir():
            shutil.rmtree(replaced)

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metrics lines; a torn last line (the process was killed while writing) is
        dropped, a damaged line before it is an error."""
        if not self.metrics_file.exists():
            return []
        lines = [x for x in self.metrics_file.read_text(errors="replace").splitlines() if x]
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    log.warning("%s: dropping a torn last line", self.metrics_file)
                    break
                raise ConfigError(f"{self.metrics_file} line {i + 1} is damaged; fix or remove "
                                  "the file, or start again with --overwrite") from None
        return [m for m in out if isinstance(m, dict)]

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the lines of the first ``epochs`` epochs (those the saved state covers).
        Under torchrun only rank 0 writes."""
        if not self._main:
            return
        lines = [m for m in self.read_metrics()
                 if isinstance(m.get("epoch", 0), int) and m.get("epoch", 0) <= epochs]
        self._write_metrics(lines)

    def append_metrics(self, line: dict[str, Any]) -> None:
        self._write_metrics(self.read_metrics() + [line])

    def _write_metrics(self, lines: list[dict[str, Any]]) -> None:
        write_text(self.metrics_file, "".join(json.dumps(m) + "\n" for m in lines))

    # -- closing --------------------------------------------------------------------------------
    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(failed=exc_type is not None)

    def _close(self, failed: bool) -> None:
        """Release the lock; after a failure before any saved epoch, leave the folder as it was."""
        try:  # tidy only a folder this run held the lock of: never another run's files
            if failed and self._lock is not None and not self._committed and self.path.is_dir():
                for name in _names(self.path) - self._before:
                    if name not in (".robustlab.lock", _REPLACED):
                        _remove(self.path / name)
                replaced = self.path / _REPLACED
                if replaced.is_dir():
                    for f in replaced.iterdir():
                        os.replace(f, self.path / f.name)
                    replaced.rmdir()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            if failed and not self._committed:
                remove_empty(self._created_dirs)


# data options a run before them implicitly had, and ones that do not change what is trained
_DATA_DEFAULTS = {"channels": None, "size": None, "split_sizes": None, "split_seed": 0}
_NOT_COMPARED = ("cache_dir",)  # where decoded images are kept: the images are the same


def _comparable(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A run config as resume compares it: a setting missing from a config saved before it
    existed counts as its default (data options, channels_last, a method's new knobs), and the
    decoded-image cache location does not count."""
    data = {**_DATA_DEFAULTS, **(config.get("data") or {})}
    return {**defaults, **config,
            "data": {k: v for k, v in data.items() if k not in _NOT_COMPARED}}


def _field_defaults(cfg: Any) -> dict[str, Any]:
    """The JSON form of the defaults of a config dataclass's fields (those that have one)."""
    if not dataclasses.is_dataclass(cfg):
        return {}
    out = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        if dataclasses.is_dataclass(out.get(f.name)):
            out[f.name] = to_dict(out[f.name])
    return json.loads(json.dumps(out, default=json_default))


def _has_state(path: Path) -> bool:
    return (path / "last.json").exists() and (path / "last.safetensors").exists()


def _names(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()} if path.is_dir() else set()


def _owned_files(path: Path) -> list[Path]:
    files = [path / n for n in OWNED if (path / n).exists()]
    for pattern in OWNED_GLOBS:
        files += sorted(path.glob(pattern))
    return files


def _remove_owned(path: Path) -> None:
    for f in _owned_files(path):
        f.unlink()


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
