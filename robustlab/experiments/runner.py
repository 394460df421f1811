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
from .launch import DISTRIBUTED_KINDS, Launch, LaunchFailed, launch_step, uses_launcher
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
                  "elsewhere": "runs on machine 0",
                  "failed": f"FAILED: {o.error} (log: {o.log})",
                  "skipped": o.error or "skipped"}[o.status]
        self.say(f"[{self.count}/{self.total}] {s.kind} {name}: {detail}")


def run_plan(plan: Plan, names: list[str], out: Path, *, data_root: str | None, device: str,
             jobs: int = 1, progress: bool = True, say: Callable[[str], None] = print,
             launch: Launch = Launch(), slots: list[str | None] | None = None
             ) -> dict[str, Outcome]:
    """Run the steps ``names`` of ``plan`` (already closed under what they need) into ``out``.

    ``launch``: how training and evaluation steps start (torchrun processes, machines);
    ``slots``: each side-by-side job's GPUs (:func:`~robustlab.experiments.launch.gpu_slots`)."""
    where = {n: str(step_folder(out, plan.steps[n])) for n in plan.order}
    prog = _Progress(plan, len(names), say)
    slots = slots or [None] * max(jobs, 1)
    run = _Runner(where, data_root, device, launch, uses_launcher(launch, slots))
    if jobs <= 1:
        _run_in_order(plan, names, prog, run, slots[0], progress)
    else:
        _run_side_by_side(plan, names, prog, run, slots)
    return prog.outcomes


@dataclass(frozen=True)
class _Runner:
    """What every step of a run shares: folders, data, device, and how steps start."""

    where: dict[str, str]
    data_root: str | None
    device: str
    launch: Launch
    launched: bool  # steps start in a torchrun process of their own


def _run_in_order(plan: Plan, names: list[str], prog: _Progress, run: _Runner,
                  gpus: str | None, progress: bool) -> None:
    """One step after the other, announcing each that is not cached."""
    for name in names:
        dep = prog.blocked(name)
        if dep:
            prog.skip(name, dep)
            continue
        s = plan.steps[name]
        if read_done(Path(run.where[name])) is None and _runs_here(s, run):
            prog.say(f"[{prog.count + 1}/{prog.total}] {s.kind} {name}: running "
                     f"({s.about or s.kind})")
        prog.finish(name, run_step(s, run, gpus, progress))


def _run_side_by_side(plan: Plan, names: list[str], prog: _Progress, run: _Runner,
                      slots: list[str | None]) -> None:
    """Up to ``len(slots)`` worker processes, each job on its slot's GPUs; a step starts once
    every step it needs has ended (no progress bars: the workers' would interleave)."""
    pending, free = list(names), list(range(len(slots)))
    with ProcessPoolExecutor(len(slots), mp_context=_spawn()) as pool:
        running: dict[Any, tuple[str, int]] = {}
        while pending or running:
            for name in list(pending):
                if not free:
                    break
                busy = {n for n, _ in running.values()}
                if any(d in pending or d in busy for d in plan.steps[name].needs):
                    continue
                pending.remove(name)
                dep = prog.blocked(name)
                if dep:
                    prog.skip(name, dep)
                    continue
                slot = free.pop(0)
                running[pool.submit(run_step, plan.steps[name], run, slots[slot], False)] = (
                    name, slot)
            if not running:
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                name, slot = running.pop(fut)
                free.append(slot)
                prog.finish(name, fut.result())


def _spawn():
    import multiprocessing

    return multiprocessing.get_context("spawn")


def _runs_here(step: Step, run: _Runner) -> bool:
    """Machine 0 runs every step; the others only meet it for the distributed ones."""
    return run.launch.main or step.kind in DISTRIBUTED_KINDS


def run_step(step: Step, run: _Runner, gpus: str | None, progress: bool) -> Outcome:
    """Run one step (or return its cached record) and write its ``step.json`` (machine 0)."""
    folder = Path(run.where[step.name])
    done = read_done(folder)
    if done is not None:
        return Outcome("cached", done.get("seconds", 0.0), done.get("result"))
    if not _runs_here(step, run):
        return Outcome("elsewhere")
    folder.mkdir(parents=True, exist_ok=True)
    settings = resolve_refs(step.settings, run.where)
    log_path = folder / "log.txt"
    record = {"name": step.name, "id": step.id, "kind": step.kind}
    t0 = time.perf_counter()
    try:
        if run.launched:
            result = launch_step(run.launch, gpus, step.kind, settings, folder, run.data_root,
                                 run.device, progress)
        else:
            with captured(log_path):
                result = KINDS.get(step.kind)(settings, Context(folder, run.data_root,
                                                                run.device, progress))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failed step is a result: the others still run
        if not run.launched:
            with captured(log_path):
                logging.getLogger("robustlab").error("%s", traceback.format_exc())
        seconds = round(time.perf_counter() - t0, 3)
        if run.launch.main:
            write_json(folder / "step.json", {**record, "status": "failed",
                                              "error": one_line(exc), "seconds": seconds})
        return Outcome("failed", seconds, error=one_line(exc), log=str(log_path))
    seconds = round(time.perf_counter() - t0, 3)
    if run.launch.main:
        write_json(folder / "step.json", {
            **record, "status": "ok", "settings": step.settings, "resolved": settings,
            "seconds": seconds, "result": result, "provenance": provenance(),
            **({"launch": _launched(run.launch, step, gpus)} if run.launched else {})})
    return Outcome("ok", seconds, result)


def _launched(launch: Launch, step: Step, gpus: str | None) -> dict[str, Any]:
    """How the step ran, for its record."""
    many = step.kind in DISTRIBUTED_KINDS
    return {"nproc_per_node": launch.nproc_per_node if many else 1,
            "nnodes": launch.nnodes if many else 1, "gpus": gpus}


def one_line(exc: BaseException) -> str:
    if isinstance(exc, LaunchFailed):  # already the failing process's one line
        return " ".join(str(exc).split())
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def captured(path: Path) -> Iterator[None]:
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
