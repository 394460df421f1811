"""``reproduce``: plan, run, collect ``results.json``, render every output and the report."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .._io import provenance, write_json, write_text
from .._lock import Lock
from ..config import from_dict, to_dict
from ..errors import ConfigError
from .launch import Launch, gpu_slots
from .recipe import RECIPES, Recipe, load_settings
from .runner import read_done, run_plan, step_folder
from .steps import Plan

MARKER = "reproduce.json"


def plan_for(recipe: Recipe, settings: Any, only: Sequence[str] | None = None
             ) -> tuple[Plan, list[str], list[str]]:
    """(plan, outputs to make, steps they need in run order)."""
    plan = Plan(recipe.steps(settings))
    outputs = list(recipe.outputs)
    if only:
        unknown = [o for o in only if o not in recipe.outputs]
        if unknown:
            raise ConfigError(f"recipe {recipe.name} has no output {', '.join(map(repr, unknown))};"
                              f" its outputs: {', '.join(recipe.outputs)}")
        outputs = [o for o in outputs if o in only]
    needed = sorted({s for o in outputs for s in recipe.outputs[o].needs(settings)})
    return plan, outputs, plan.closure(needed)


def reproduce(recipe_name: str, preset: str, out: str | Path, *, only: Sequence[str] = (),
              dry_run: bool = False, data_root: str | None = None, device: str = "auto",
              seed: int | None = None, jobs: int = 1, overwrite: bool = False,
              overrides: dict[str, Any] | None = None, progress: bool = True,
              docs: str | Path | None = None, say: Callable[[str], None] = print,
              launch: Launch | None = None) -> dict:
    """Reproduce ``recipe_name`` ("ssr-purifier", "traffic-signs" or "all") at ``preset`` into
    ``out``. Returns the results document (also ``out/results.json``).

    ``launch``: run every training and evaluation step under torchrun with that many processes
    (and machines; see :mod:`robustlab.experiments.launch`); ``jobs`` steps side by side, each
    on GPUs of its own. A machine other than machine 0 returns an empty document: machine 0
    writes the results."""
    launch = launch or Launch()
    names = list(RECIPES) if recipe_name == "all" else [recipe_name]
    recipes = [RECIPES.get(n) for n in names]
    if recipe_name == "all" and only:
        raise ConfigError("--only names outputs of one recipe; use it with ssr-purifier or "
                          "traffic-signs")
    over = dict(overrides or {})
    if seed is not None:
        over["seed"] = seed
    prepared = _prepare(recipes, preset, over, only)
    out = Path(out)
    if dry_run:
        for r, settings, plan, outputs, steps in prepared:
            say(describe_plan(r, preset, plan, outputs, steps, _where(out, r, len(names))))
        return {}
    slots = gpu_slots(launch, jobs, str(device))  # enough GPUs for every process asked for?
    _check_out(out, recipe_name, preset, overwrite)
    for r, settings, plan, outputs, steps in prepared:  # before any file is written
        _check_data(plan, steps, data_root)
    runs = _Runs(data_root, device, jobs, progress, say, docs, launch, slots)
    if not launch.main:  # machine 0 holds the lock and writes the results
        for r, settings, plan, outputs, steps in prepared:
            run_plan(plan, steps, _where(out, r, len(names)), **runs.plan_args())
        return {}
    with Lock(out, is_dir=True, what=f"--out {out}"):
        write_json(out / MARKER, {"recipe": recipe_name, "preset": preset})
        results = {r.name: _run_one(r, preset, settings, plan, outputs, steps,
                                    _where(out, r, len(names)), runs)
                   for r, settings, plan, outputs, steps in prepared}
        if len(names) > 1:
            _write_joint_report(out, results, say)
    return results if len(names) > 1 else results[names[0]]


def _prepare(recipes: list[Recipe], preset: str, over: dict[str, Any],
             only: Sequence[str]) -> list[tuple[Recipe, Any, Plan, list[str], list[str]]]:
    """(recipe, settings, plan, outputs, steps) of each recipe: every recipe and preset is
    checked before anything runs."""
    prepared = []
    for r in recipes:
        settings = load_settings(r, preset, overrides=over)
        prepared.append((r, settings, *plan_for(r, settings, only)))
    return prepared


def _where(out: Path, recipe: Recipe, n_recipes: int) -> Path:
    """A recipe's folder: ``out`` itself, or ``out/NAME`` when several recipes share it."""
    return out / recipe.name if n_recipes > 1 else out


def _write_joint_report(out: Path, results: dict[str, dict], say: Callable[[str], None]) -> None:
    """``out/report.html`` over every recipe's results (each also has its own)."""
    from .report import write_report

    write_report(out / "report.html", [(RECIPES.get(n), d, out / n) for n, d in results.items()])
    say(f"report: {out / 'report.html'}")


def _check_out(out: Path, recipe: str, preset: str, overwrite: bool) -> None:
    marker = out / MARKER
    if not marker.exists():
        return
    try:
        old = json.loads(marker.read_text())
    except (OSError, ValueError):
        old = {}
    if (old.get("recipe"), old.get("preset")) != (recipe, preset) and not overwrite:
        raise ConfigError(f"{out} holds a reproduction of {old.get('recipe')!r} at preset "
                          f"{old.get('preset')!r}; use another --out, or --overwrite to reuse it "
                          f"for {recipe!r} at {preset!r}")


def _check_data(plan: Plan, steps: list[str], data_root: str | None) -> None:
    """Every dataset the steps read can be found (the error says what to download, where)."""
    from .. import data as rl_data

    names = {plan.steps[s].settings.get("dataset") or
             plan.steps[s].settings.get("config", {}).get("dataset") for s in steps} - {None}
    for name in sorted(names):
        rl_data.load(name, "test", root=data_root, download=True)


@dataclass(frozen=True)
class _Runs:
    """How this reproduction runs its steps (the same for every recipe of it)."""

    data_root: str | None
    device: str
    jobs: int
    progress: bool
    say: Callable[[str], None]
    docs: str | Path | None
    launch: Launch
    slots: list[str | None]

    def plan_args(self) -> dict[str, Any]:
        return {"data_root": self.data_root, "device": self.device, "jobs": self.jobs,
                "progress": self.progress, "say": self.say, "launch": self.launch,
                "slots": self.slots}


def _run_one(recipe: Recipe, preset: str, settings: Any, plan: Plan, outputs: list[str],
             steps: list[str], out: Path, runs: _Runs) -> dict:
    t0, say = time.perf_counter(), runs.say
    say(f"{recipe.name} ({preset}): {len(steps)} steps for {len(outputs)} outputs in {out}")
    outcomes = run_plan(plan, steps, out, **runs.plan_args())
    doc = {"recipe": recipe.name, "title": recipe.title, "report": recipe.report,
           "preset": preset, "settings": to_dict(settings), "outputs": outputs,
           "provenance": provenance(), "seconds": round(time.perf_counter() - t0, 3),
           "steps": {}}
    for name in steps:
        s = plan.steps[name]
        o = outcomes[name]
        rec = read_done(step_folder(out, s)) or {}
        doc["steps"][name] = {"id": s.id, "kind": s.kind, "about": s.about,
                              "folder": str(step_folder(out, s).relative_to(out)),
                              "status": "ok" if o.status in ("ok", "cached") else o.status,
                              "cached": o.status == "cached", "settings": s.settings,
                              "seconds": rec.get("seconds", o.seconds),
                              "result": rec.get("result"), "error": o.error, "log": o.log}
    write_json(out / "results.json", doc)
    render_all(recipe, doc, out, say, runs.docs)
    return doc


def render_all(recipe: Recipe, doc: dict, out: Path, say: Callable[[str], None] = print,
               docs: str | Path | None = None) -> None:
    """Every output of ``doc`` (a results document) into ``out``: tables/*.md|csv,
    figures/*.png, the claims, and report.html last (each file written atomically)."""
    from .markdown import publish, results_markdown
    from .render import Table
    from .report import write_report
    from .results import Results

    res = Results(doc, out)
    settings = from_dict(recipe.settings, doc["settings"])
    rendered: dict[str, Any] = {}
    for name in doc["outputs"]:
        try:
            made = recipe.outputs[name].render(res, settings, out / "figures")
        except Exception as exc:  # a renderer must not lose the others
            made = f"could not be rendered: {type(exc).__name__}: {exc}"
        if isinstance(made, Table):
            write_text(out / "tables" / f"{name}.md", made.markdown())
            write_text(out / "tables" / f"{name}.csv", made.csv())
        rendered[name] = made if isinstance(made, Table) else str(made)
    doc["rendered"] = {k: (v.name if isinstance(v, Table) else v) for k, v in rendered.items()}
    doc["claims"] = [c.__dict__ for c in recipe.claims(res, settings)]
    write_json(out / "results.json", doc)
    write_text(out / "results.md", results_markdown(recipe, doc, rendered, "figures"))
    if docs is not None:
        say(f"published: {publish(recipe, doc, rendered, Path(docs))}")
    write_report(out / "report.html", [(recipe, doc, out)])
    say(f"report: {out / 'report.html'}")


def describe_plan(recipe: Recipe, preset: str, plan: Plan, outputs: list[str], steps: list[str],
                  out: Path) -> str:
    """The --dry-run text: every step, its settings, cached or not, and a rough cost."""
    from .estimate import estimate_seconds

    lines = [f"{recipe.name} at preset {preset}: outputs {', '.join(outputs)}",
             f"{len(steps)} steps (folders under {out / 'steps'}):"]
    total = 0.0
    for i, name in enumerate(steps, 1):
        s = plan.steps[name]
        cached = read_done(step_folder(out, s)) is not None
        sec = 0.0 if cached else estimate_seconds(s)
        total += sec
        state = "cached" if cached else f"to run, about {_human(sec)}"
        lines.append(f"  [{i}] {s.kind:<14} {name}  ({state})")
        if s.about:
            lines.append(f"        {s.about}")
        lines.append(f"        {json.dumps(s.settings, sort_keys=True, default=str)}")
    lines.append(f"estimated total: about {_human(total)} on this machine's CPU "
                 "(a rough guide from image passes)")
    return "\n".join(lines)


def _human(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
