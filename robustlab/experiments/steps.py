"""Steps: the units a recipe expands into, each identified by a hash of its resolved settings.

A step is one call of a robustlab entry point (train a classifier, train a purifier, pre-train,
evaluate, sweep) with fully resolved settings. Settings may refer to another step's files with
:func:`ref` (``ref("classifier-vgg19", "model.safetensors")``); the step's id hashes its kind,
its settings and the ids of the steps it refers to, so a step shared by several tables (the VGG19
classifier, the B3 purifier) is one step, and any change upstream gives every step downstream a
new id (and a new folder): a finished step is never run again, a changed one always is.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from ..errors import ConfigError

_REF = "@step:"


def ref(step: str, path: str = "") -> str:
    """A reference to ``path`` inside the run folder of step ``step``, resolved at run time."""
    return f"{_REF}{step}/{path}" if path else f"{_REF}{step}"


def refs_in(obj: Any) -> Iterator[str]:
    """The names of the steps ``obj`` (settings, nested) refers to."""
    if isinstance(obj, str) and obj.startswith(_REF):
        yield obj[len(_REF):].split("/", 1)[0]
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from refs_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from refs_in(v)


def resolve_refs(obj: Any, where: dict[str, str]) -> Any:
    """``obj`` with every reference replaced by a path (``where``: step name -> its folder)."""
    if isinstance(obj, str) and obj.startswith(_REF):
        name, _, path = obj[len(_REF):].partition("/")
        return f"{where[name]}/{path}" if path else where[name]
    if isinstance(obj, dict):
        return {k: resolve_refs(v, where) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [resolve_refs(v, where) for v in obj]
    return obj


@dataclass
class Step:
    """One unit of work. ``kind`` names a runner in :data:`robustlab.experiments.kinds.KINDS`;
    ``settings`` are its resolved settings (JSON-able; references with :func:`ref`)."""

    name: str
    kind: str
    settings: dict[str, Any]
    about: str = ""  # one line for the plan ("VGG19 classifier for Tables 1-5")
    id: str = field(default="", init=False)

    @property
    def needs(self) -> list[str]:
        return sorted(set(refs_in(self.settings)))

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.id}"


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


class Plan:
    """The steps of a recipe at one preset, in an order that runs each after what it needs."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self.steps: dict[str, Step] = {}
        for s in steps:
            if s.name in self.steps:
                if canonical(self.steps[s.name].settings) != canonical(s.settings):
                    raise ConfigError(f"two different steps are named {s.name!r}")
                continue  # the same step asked for twice: one step
            self.steps[s.name] = s
        self.order = self._toposort()
        for name in self.order:  # ids after the ids of what each step needs
            s = self.steps[name]
            deps = {d: self.steps[d].id for d in s.needs}
            digest = hashlib.sha256(canonical({"kind": s.kind, "settings": s.settings,
                                               "needs": deps}).encode())
            s.id = digest.hexdigest()[:12]

    def _toposort(self) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ConfigError(f"steps depend on each other in a cycle: {' -> '.join(chain)}")
            if name not in self.steps:
                raise ConfigError(f"step {chain[-2] if len(chain) > 1 else name!r} needs a step "
                                  f"{name!r} that the recipe does not define")
            state[name] = 1
            for dep in self.steps[name].needs:
                visit(dep, (*chain, dep))
            state[name] = 2
            order.append(name)

        for name in self.steps:
            visit(name, (name,))
        return order

    def closure(self, names: Iterable[str]) -> list[str]:
        """``names`` and every step they need, in run order."""
        want: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n in want:
                continue
            if n not in self.steps:
                raise ConfigError(f"unknown step {n!r}")
            want.add(n)
            todo.extend(self.steps[n].needs)
        return [n for n in self.order if n in want]

    def dependents(self, name: str) -> set[str]:
        """Every step that needs ``name``, directly or not."""
        out: set[str] = set()
        for n in self.order:
            if any(d == name or d in out for d in self.steps[n].needs):
                out.add(n)
        return out
