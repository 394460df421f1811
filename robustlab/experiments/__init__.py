"""Reproduce a report with one command: recipe -> cached steps -> results.json -> tables,
figures and a self-contained HTML report.

    robustlab reproduce ssr-purifier --preset quick --out runs/ssr
    robustlab.experiments.reproduce("traffic-signs", "smoke", "runs/signs")

``results.json`` is the single source of every table, figure and the report: it holds each step's
resolved settings, result, seconds, versions and the git commit. Running the same command again
reruns nothing that finished and continues what was interrupted.
"""
from __future__ import annotations

from .recipe import PRESETS, RECIPES, Claim, Output, Recipe, load_settings
from .reproduce import plan_for, reproduce
from .steps import Plan, Step, ref

# the recipes register themselves
from . import ssr_tables as _ssr_tables  # noqa: E402,F401
from . import traffic_signs_tables as _traffic_signs_tables  # noqa: E402,F401

__all__ = ["PRESETS", "RECIPES", "Claim", "Output", "Plan", "Recipe", "Step", "load_settings",
           "plan_for", "ref", "reproduce"]
