"""robustlab: attack, defend and honestly evaluate image classifiers.

Public API (see DESIGN.md)::

    import robustlab as rl
    ds = rl.data.load("fashion-mnist", "train")
    model = rl.models.create("small-cnn", num_classes=10, in_channels=1)
    x_adv = rl.attacks.pgd(model, x, y, eps=0.1, step_size=0.025, steps=20)
    result = rl.evaluate(model, ds, attack={"name": "pgd", "eps": 0.1, "steps": 20})
"""
from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import Any

_SUBMODULES = ("data", "models", "attacks", "purifiers", "training", "evaluation", "distributed",
               "viz")
# packages that register kinds of checkpoint besides models' "classifier" (robustlab.models.kinds
# imports them when a checkpoint of a kind not registered yet is loaded)
KIND_PACKAGES = ("purifiers",)


def __getattr__(name: str) -> Any:
    # Submodules load lazily so that `import robustlab` (and the CLI's --help) stays fast.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name == "evaluate":
        return importlib.import_module(".evaluation", __name__).evaluate
    raise AttributeError(f"module 'robustlab' has no attribute {name!r}")
