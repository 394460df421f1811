"""Up-front validation of attack inputs and settings: clear errors before any forward pass.

Each setting has one rule, written here or in ``robustlab._checks``. The attack functions apply
them to their arguments (their own entry check, for users who call them directly), and
:func:`check_settings` applies the same rules to an attack's typed settings object once, when an
evaluation's attack is specified, so nothing the evaluation later runs fails on a setting.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor

from .. import runtime
from .._checks import check_images, check_int, check_labels, check_positive
from ..errors import ConfigError, InputError, RobustlabError
from .geometry import check_norm
from .objectives import OBJECTIVES, objective_kwargs_error, on_logits


def check_model(model: Any) -> None:
    if not callable(model):
        raise ConfigError(f"model must be a callable nn.Module mapping [0, 1] images to logits, "
                          f"got {type(model).__name__}")


def check_inputs(x: Tensor, y: Tensor | None, *, y_required: bool, why: str = "") -> None:
    """x: float (B, C, H, W) in [0, 1]; y: None or (B,) integer labels >= 0 on x's device."""
    check_images(x)
    if y is None:
        if y_required:
            raise ConfigError(f"labels y are required{why}; pass y=(B,) class indices")
        return
    check_labels(y, x.shape[0])
    if y.device != x.device:
        raise InputError(f"labels are on {y.device} but images on {x.device}; move them together")


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def check_generator(generator: Any) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a torch.Generator or None, got "
                          f"{type(generator).__name__}; build one with "
                          "torch.Generator(device).manual_seed(seed)")
    return generator


def check_seed(seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return seed


def check_kwargs_dict(name: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a dict of keyword arguments or None, got "
                          f"{type(value).__name__}")
    return dict(value)


def resolve(registry_get: Callable[[str], Any], name_or_obj: Any, kind: str) -> Any:
    """A registered entry by name, or a callable passed directly."""
    if isinstance(name_or_obj, str):
        return registry_get(name_or_obj)
    if callable(name_or_obj):
        return name_or_obj
    raise ConfigError(f"{kind} must be a registered name or a callable, got {name_or_obj!r}")


def objective_name(objective: Any) -> str:
    return objective if isinstance(objective, str) else getattr(objective, "__name__", "custom")


def check_objective(objective: Any, objective_kwargs: Any,
                    early_stop: bool = False) -> tuple[Callable, dict]:
    """(the objective factory, its keyword arguments): a known name or a callable, arguments it
    accepts, and a classifier objective when ``early_stop`` (which reads predictions)."""
    make = resolve(OBJECTIVES.get, objective, "objective")
    name = objective_name(objective)
    if early_stop and not on_logits(make):
        raise ConfigError(f"early_stop needs a classifier objective (ce, cw, kl), not {name!r}")
    okw = check_kwargs_dict("objective_kwargs", objective_kwargs)
    msg = objective_kwargs_error(make, okw)
    if msg:
        raise ConfigError(f"objective {name!r}: {msg}")
    return make, okw


# setting name -> its rule, for the settings every engine attack shares (eps has its own, the
# one eps rule, applied when the settings object is built: robustlab.attacks.attack_settings)
SETTING_RULES: dict[str, Callable[[Any], Any]] = {
    "norm": check_norm,
    "step_size": lambda v: None if v is None else check_positive("step_size", v),
    "steps": lambda v: check_int("steps", v, 1),
    "restarts": lambda v: check_int("restarts", v, 1),
    "random_start": lambda v: check_bool("random_start", v),
    "targeted": lambda v: check_bool("targeted", v),
    "early_stop": lambda v: check_bool("early_stop", v),
    "amp_dtype": runtime.amp_dtype,
    "seed": check_seed,
    "generator": check_generator,
}


def check_settings(name: str, settings: Any) -> Any:
    """Check every setting of attack ``name``'s typed settings object (a frozen dataclass from
    ``attack_settings``) by the rules its attack function applies; return it unchanged.

    Raises: the rule's error (ConfigError, or UnknownNameError for a norm or objective name),
    its message prefixed with the attack's name.
    """
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    try:
        for key, value in values.items():
            if key in SETTING_RULES:
                SETTING_RULES[key](value)
        if values.get("seed") is not None and values.get("generator") is not None:
            raise ConfigError("pass either seed or generator, not both")
        if "objective" in values:
            check_objective(values["objective"], values.get("objective_kwargs"),
                            values.get("early_stop", False))
    except RobustlabError as exc:
        raise type(exc)(f"attack {name!r}: {exc}") from None
    return settings
