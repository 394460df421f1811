"""Up-front validation of attack inputs and settings: clear errors before any forward pass."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .._checks import check_images, check_labels
from ..errors import ConfigError, InputError



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
