"""Reading a results document: a step's result, or why it is missing."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .render import Cell


class Missing(Exception):
    """A number a table needs is not there: its step failed, was skipped or not run."""


class Results:
    """``results.json`` of one recipe run, with the folder it lives in."""

    def __init__(self, doc: dict, out: Path) -> None:
        self.doc, self.out = doc, Path(out)

    def result(self, step: str) -> Any:
        rec = self.doc["steps"].get(step)
        if rec is None:
            raise Missing(f"step {step} not run")
        if rec["status"] != "ok":
            raise Missing(f"step {step} {rec['status']}: {rec.get('error') or ''}".strip())
        return rec["result"]

    def path(self, step: str, name: str = "") -> Path:
        """A file in a finished step's folder."""
        self.result(step)
        return self.out / self.doc["steps"][step]["folder"] / name

    def cell(self, get: Callable[[], float | None], report: float | None = None) -> Cell:
        """``get()`` (a fraction) as a Cell in %, or a missing cell that says why."""
        try:
            v = get()
        except Missing as m:
            return Cell(None, report, str(m))
        except (KeyError, IndexError, TypeError) as exc:
            return Cell(None, report, f"not in the results ({exc})")
        return Cell(None if v is None else 100.0 * v, report)
