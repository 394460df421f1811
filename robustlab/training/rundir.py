"""A run's output directory: its resolved config, per-epoch metrics, and protection against
mixing two different runs in one place."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._io import provenance, write_json, write_text
from ..config import to_dict
from ..errors import ConfigError

# Files a run owns; --overwrite removes exactly these, nothing else in the directory.
OWNED = ("config.json", "metrics.jsonl", "model.safetensors", "model.json", "last.safetensors",
         "last.json", "best.safetensors", "best.json", "purifier.safetensors", "purifier.json",
         "critic.safetensors", "critic.json", "encoder.safetensors", "encoder.json")


class RunDir:
    """Create or reopen ``path`` for a run of ``kind`` with config ``cfg``.

    A directory that already holds a run is refused unless ``resume`` (the configs must match)
    or ``overwrite`` (the previous run's files are removed) is given. With ``defer`` construction
    only checks and :meth:`create` writes, so a run that fails while starting leaves nothing.
    """

    def __init__(self, path: str | Path, kind: str, cfg: Any, *, resume: bool = False,
                 overwrite: bool = False, defer: bool = False) -> None:
        self.path = Path(path)
        self.config_dict = {"kind": kind, **to_dict(cfg)}
        cfg_file = self.path / "config.json"
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pass one")
        self._overwrite = overwrite and cfg_file.exists()
        if cfg_file.exists():
            try:
                old = json.loads(cfg_file.read_text()).get("config", {})
            except (OSError, json.JSONDecodeError, AttributeError) as exc:
                raise ConfigError(f"{cfg_file} is unreadable ({exc}); remove it or use another "
                                  "--out") from None
            if overwrite:
                pass  # the old files go in create(), once the new run is known to start
            elif not resume:
                raise ConfigError(f"{self.path} already holds a run; pass --resume to continue it "
                                  "or --overwrite to replace it (or choose another --out)")
            elif old != self.config_dict:
                diff = sorted(k for k in set(old) | set(self.config_dict)
                              if old.get(k) != self.config_dict.get(k))
                raise ConfigError(f"{self.path} holds a different run (it differs in: "
                                  f"{', '.join(diff)}); --resume needs the same settings, or use "
                                  "--overwrite / another --out")
        if not defer:
            self.create()

    def create(self) -> "RunDir":
        """Remove a replaced run's files (with overwrite), then write this run's config.json.
        Called once the run's data, model and method are built, so a run that fails to start
        leaves nothing behind."""
        if self._overwrite:
            for name in OWNED:
                (self.path / name).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / "config.json", {"config": self.config_dict, "provenance": provenance()})
        return self

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the lines of the first ``epochs`` epochs (those the saved state covers).
        Under torchrun only rank 0 writes."""
        from ..distributed import world

        if not world().main:
            return
        lines = [m for m in self.read_metrics() if m.get("epoch", 0) <= epochs]
        self._write_metrics(lines)

    def append_metrics(self, line: dict[str, Any]) -> None:
        self._write_metrics(self.read_metrics() + [line])

    def _write_metrics(self, lines: list[dict[str, Any]]) -> None:
        write_text(self.metrics_file, "".join(json.dumps(m) + "\n" for m in lines))
