"""Defaults that several layers show or use, kept in one torch-free place.

The attacks, their settings' help, the trainers, the guards, the purifier config, the CLI help and
the reports' tables all read the default step of an attack from here, so no copy can drift (and
``--help`` or a dry run need not import torch to print it).
"""
from __future__ import annotations

# Default step of each attack when step_size is None, as a fraction of eps (REFERENCE.md).
DEFAULT_STEP = {"pgd": 1 / 4, "fast-fgsm": 1.25, "feature-distortion": 1 / 8, "fgsm": 1.0}


def default_step(attack: str, eps: float) -> float:
    """The step attack ``attack`` (a :data:`DEFAULT_STEP` name) takes at budget ``eps`` when no
    step_size is given: eps times its fraction (pgd: eps/4, so 2/255 at 8/255)."""
    return float(eps) * DEFAULT_STEP[attack]


def step_text(attack: str) -> str:
    """The default step of ``attack`` in words, for help and results files: "eps/4", "1.25 eps"."""
    fraction = DEFAULT_STEP[attack]
    if fraction == 1:
        return "eps"
    if fraction < 1 and (1 / fraction).is_integer():
        return f"eps/{int(1 / fraction)}"
    return f"{fraction:g} eps"
