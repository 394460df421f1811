"""Named attacks: the ``ATTACKS`` registry and ``run_attack`` dispatch.

Each entry pairs a function ``fn(model, x, y, **settings) -> x_adv`` with a frozen settings
dataclass (defaults and per-field help in ``field(metadata={"help": ...})``), so the CLI, recipes
and the evaluator can list attacks, check settings against it and call them by name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from .._checks import check_eps
from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class AttackEntry:
    """A registered attack.

    fn: ``fn(model, x, y, **settings) -> x_adv``. settings: its frozen settings dataclass.
    needs_labels: whether y is required. model_role: "classifier", or "extractor" when the model
    argument is a feature extractor (feature distortion).
    """

    fn: Callable[..., Tensor]
    settings: type
    needs_labels: bool = True
    model_role: str = "classifier"
    help: str = ""


ATTACKS: Registry[AttackEntry] = Registry("attack")


def opt(default: Any, help: str) -> Any:
    """A settings field with a default and a help line."""
    return field(default=default, metadata={"help": help})


def register_attack(name: str, settings: type, *, needs_labels: bool = True,
                    model_role: str = "classifier", help: str = "") -> Callable:
    """Decorator: register ``fn(model, x, y, **settings)`` as ``name`` with its settings class."""
    if not (dataclasses.is_dataclass(settings) and settings.__dataclass_params__.frozen):
        raise TypeError(f"settings of attack {name!r} must be a frozen dataclass")

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        text = help or (fn.__doc__ or "").strip().split("\n")[0]
        ATTACKS.register(name, help=text)(AttackEntry(fn, settings, needs_labels, model_role,
                                                      text))
        return fn
    return deco


def attack_settings(name: str, **settings: Any) -> Any:
    """The settings dataclass of attack ``name`` filled with ``settings`` (unknown keys refused)."""
    cls = ATTACKS.get(name).settings
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ConfigError(f"attack {name!r} has no setting(s) {', '.join(unknown)}; "
                          f"valid settings: {', '.join(valid)}")
    out = cls(**settings)
    if getattr(out, "eps", None) is not None:  # the one eps rule, before any data is loaded
        check_eps(out.eps, getattr(out, "norm", "linf"), name=f"attack {name!r}: eps")
    return out


def describe(name: str) -> list[tuple[str, Any, str]]:
    """(setting, default, help) rows of attack ``name``, for ``robustlab list`` and docs."""
    return [(f.name, f.default, f.metadata.get("help", ""))
            for f in dataclasses.fields(ATTACKS.get(name).settings)]


def run_attack(name: str, model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor | None = None,
               **settings: Any) -> Tensor:
    """Run the registered attack ``name`` with ``settings`` checked against its settings class.

    For "feature-distortion", ``model`` is the feature extractor and y is ignored.
    Returns the adversarial batch (same shape/dtype/device as x, in [0, 1], within eps of x).
    """
    entry = ATTACKS.get(name)
    s = attack_settings(name, **settings)
    kwargs = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}  # no deep copies
    return entry.fn(model, x, y, **kwargs)


def generator_for(x: Tensor, seed: int | None, generator: torch.Generator | None
                  ) -> torch.Generator | None:
    """The generator to use: ``generator``, or a new one on x's device seeded with ``seed``."""
    if seed is None:
        return generator
    if generator is not None:
        raise ConfigError("pass either seed or generator, not both")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    device = x.device if isinstance(x, Tensor) else torch.device("cpu")
    return torch.Generator(device=device).manual_seed(seed)
