"""Recipes: a report's experiments as settings (YAML, one complete set per preset) plus the Python
that expands the settings into steps and turns the steps' results into the report's tables,
figures and claims.

``recipes/NAME.yaml``::

    recipe: ssr-purifier          # the Python recipe it configures
    presets:
      smoke: {dataset: synthetic, ...every setting...}
      quick: {...}
      paper: {...}

Each preset is checked against the recipe's settings dataclass: an unknown or missing key, or a
value of the wrong type, is an error that names it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import from_dict, read_yaml_mapping
from ..errors import ConfigError
from ..registry import Registry
from .steps import Step

PRESETS = ("smoke", "quick", "paper")
RECIPE_DIR = Path(__file__).resolve().parents[2] / "recipes"


@dataclass(frozen=True)
class Output:
    """One table or figure of a report. ``needs(settings)`` names the steps it reads; ``render``
    builds it from the results (a :class:`~robustlab.experiments.render.Table` or the path of a
    figure written into the given folder)."""

    name: str
    title: str
    kind: str  # "table" or "figure"
    needs: Callable[[Any], list[str]]
    render: Callable[..., Any]
    about: str = ""


@dataclass(frozen=True)
class Claim:
    """A claim of the report, and whether this run supports it."""

    claim: str
    verdict: str  # "holds", "does not hold", "cannot be judged here"
    why: str


@dataclass(frozen=True)
class Recipe:
    """A report, reproducible: settings type, steps, outputs and claims."""

    name: str
    title: str
    report: str  # the seed report it reproduces (file name under shared/seeds)
    settings: type
    steps: Callable[[Any], list[Step]]
    outputs: dict[str, Output]
    claims: Callable[[dict, Any], list[Claim]] = lambda results, settings: []
    notes: tuple[str, ...] = field(default_factory=tuple)
    yaml: Path | None = None  # its settings file (default: recipes/NAME.yaml in the repository)


RECIPES: Registry[Recipe] = Registry("recipe")


def load_settings(recipe: Recipe, preset: str, path: Path | None = None,
                  overrides: dict[str, Any] | None = None) -> Any:
    """The settings of ``recipe`` at ``preset`` from its YAML file, with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    path = path or recipe.yaml or RECIPE_DIR / f"{recipe.name}.yaml"
    doc = read_yaml_mapping(path, "recipe file")
    unknown = sorted(set(doc) - {"recipe", "presets"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: recipe, presets")
    if doc.get("recipe") != recipe.name:
        raise ConfigError(f"{path} configures recipe {doc.get('recipe')!r}, not {recipe.name!r}")
    presets = doc.get("presets")
    if not isinstance(presets, dict) or set(presets) - set(PRESETS):
        raise ConfigError(f"{path}: 'presets' must map {', '.join(PRESETS)} to settings")
    if preset not in presets:
        raise ConfigError(f"{path} has no preset {preset!r}")
    data = dict(presets[preset] or {})
    data.update(overrides or {})
    return from_dict(recipe.settings, data, where=f"{recipe.name} preset {preset}")
