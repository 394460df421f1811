"""Run a plan: each step once, in order, cached on disk, resumable, failures contained.

``OUT/steps/<name>-<id>/`` is a step's folder: its run (checkpoints, metrics), its ``log.txt``
and, once it has finished, ``step.json`` (settings, result, seconds, versions). A step whose
``step.json`` says "ok" is never run again; an interrupted one continues where it stopped (the
trainers resume from their last epoch). A step that fails is recorded with its error and log;
the steps that need it are skipped, every other step still runs.
"""
from __future__ import annotations

import logging
import time
import traceback
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .._io import provenance, write_json
from .kinds import KINDS, Context
from .steps import Plan, Step, resolve_refs

log = logging.getLogger("robustlab")


@dataclass
class Outcome:
    """What became of one step."""

    status: str  # "ok", "cached", "failed", "skipped"
    seconds: float = 0.0
    result: Any = None
    error: str | None = None
    log: str | None = None


def step_folder(out: Path, step: Step) -> Path:
    return out / "steps" / step.folder


def read_done(folder: Path) -> dict | None:
    """The record of a finished step, or None."""
    import json

    path = folder / "step.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if doc.get("status") == "ok" else None


@dataclass
class _Progress:
    """The outcomes so far, and the "[i/total] kind name: ..." line that reports each."""

    plan: Plan
    total: int
    say: Callable[[str], None]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    count: int = 0  # steps finished, cached, failed or skipped so far

    def blocked(self, name: str) -> str | None:
        """The first step ``name`` needs that failed or was skipped, or None."""
        for dep in self.plan.steps[name].needs:
            o = self.outcomes.get(dep)
            if o is not None and o.status in ("failed", "skipped"):
                return dep
        return None

    def skip(self, name: str, dep: str) -> None:
        self.finish(name, Outcome("skipped", error=f"skipped: needs {dep}"))

    def finish(self, name: str, o: Outcome) -> None:
        self.count += 1
        self.outcomes[name] = o
        s = self.plan.steps[name]
        detail = {"ok": f"done in {o.seconds:.0f} s", "cached": "cached",
                  "failed": f"FAILED: {o.error} (log: {o.log})",
                  "skipped": o.error or "skipped"}[o.status]
        self.say(f"[{self.count}/{self.total}] {s.kind} {name}: {detail}")


def run_plan(plan: Plan, names: list[str], out: Path, *, data_root: str | None, device: str,
             jobs: int = 1, progress: bool = True,
             say: Callable[[str], None] = print) -> dict[str, Outcome]:
    """Run the steps ``names`` of ``plan`` (already closed under what they need) into ``out``."""
    where = {n: str(step_folder(out, plan.steps[n])) for n in plan.order}
    prog = _Progress(plan, len(names), say)
    if jobs <= 1:
        _run_in_order(plan, names, where, prog, data_root, device, progress)
    else:
        _run_side_by_side(plan, names, where, prog, data_root, device, jobs)
    return prog.outcomes


def _run_in_order(plan: Plan, names: list[str], where: dict[str, str], prog: _Progress,
                  data_root: str | None, device: str, progress: bool) -> None:
    """One step after the other in this process, announcing each that is not cached."""
    for name in names:
        dep = prog.blocked(name)
        if dep:
            prog.skip(name, dep)
            continue
        s = plan.steps[name]
        if read_done(Path(where[name])) is None:
            prog.say(f"[{prog.count + 1}/{prog.total}] {s.kind} {name}: running "
                     f"({s.about or s.kind})")
        prog.finish(name, run_step(s, where, data_root, device, progress))


def _run_side_by_side(plan: Plan, names: list[str], where: dict[str, str], prog: _Progress,
                      data_root: str | None, device: str, jobs: int) -> None:
    """Up to ``jobs`` worker processes; a step starts once every step it needs has ended (no
    progress bars: the workers' would interleave)."""
    pending = list(names)
    with ProcessPoolExecutor(jobs, mp_context=_spawn()) as pool:
        running: dict[Any, str] = {}
        while pending or running:
            for name in list(pending):
                if len(running) >= jobs:
                    break
                if any(d in pending or d in running.values() for d in plan.steps[name].needs):
                    continue
                pending.remove(name)
                dep = prog.blocked(name)
                if dep:
                    prog.skip(name, dep)
                    continue
                running[pool.submit(run_step, plan.steps[name], where, data_root, device,
                                    False)] = name
            if not running:
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                prog.finish(running.pop(fut), fut.result())


def _spawn():
    import multiprocessing

    return multiprocessing.get_context("spawn")


def run_step(step: Step, where: dict[str, str], data_root: str | None, device: str,
             progress: bool) -> Outcome:
    """Run one step (or return its cached record) and write its ``step.json``."""
    folder = Path(where[step.name])
    done = read_done(folder)
    if done is not None:
        return Outcome("cached", done.get("seconds", 0.0), done.get("result"))
    folder.mkdir(parents=True, exist_ok=True)
    settings = resolve_refs(step.settings, where)
    log_path = folder / "log.txt"
    t0 = time.perf_counter()
    with _captured(log_path):
        try:
            result = KINDS.get(step.kind)(settings, Context(folder, data_root, device, progress))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a failed step is a result: the others still run
            logging.getLogger("robustlab").error("%s", traceback.format_exc())
            seconds = round(time.perf_counter() - t0, 3)
            write_json(folder / "step.json", {"name": step.name, "id": step.id,
                                              "kind": step.kind, "status": "failed",
                                              "error": _one_line(exc), "seconds": seconds})
            return Outcome("failed", seconds, error=_one_line(exc), log=str(log_path))
    seconds = round(time.perf_counter() - t0, 3)
    write_json(folder / "step.json", {"name": step.name, "id": step.id, "kind": step.kind,
                                      "status": "ok", "settings": step.settings,
                                      "resolved": settings, "seconds": seconds,
                                      "result": result, "provenance": provenance()})
    return Outcome("ok", seconds, result)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _captured(path: Path) -> Iterator[None]:
    """Send robustlab's log records and Python warnings of a step to its log file as well."""
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("robustlab")
    logger.addHandler(handler)
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warn_logger = logging.getLogger("py.warnings")
    warn_logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        logging.captureWarnings(False)
        warn_logger.removeHandler(handler)
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
