"""CLI sub-commands, discovered from this package: every module that defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> exit code`` is a command (``ORDER`` sorts --help)."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def _discover() -> dict[str, ModuleType]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found.append(module)
    found.sort(key=lambda m: (getattr(m, "ORDER", 50), m.NAME))
    return {m.NAME: m for m in found}


COMMANDS = _discover()
