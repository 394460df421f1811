"""Validation of the public pixel/label contract, shared by attacks, trainers and evaluators."""
from __future__ import annotations

import math

import torch

from .errors import ConfigError, InputError


def check_images(x: torch.Tensor, channels: int | None = None, name: str = "x") -> None:
    """Refuse anything but a float (B, C, H, W) batch in [0, 1] (with ``channels`` channels)."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"{name} must be a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be floating point in [0, 1], got dtype {x.dtype}; "
                         "divide uint8 images by 255")
    if channels is not None and x.shape[1] != channels:
        raise InputError(f"{name} has {x.shape[1]} channels but the model expects {channels}")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError(f"{name} contains NaN or infinite values")
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{name} must lie in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); "
                             "robustlab normalises inside the model, pass raw pixels")


def check_labels(y: torch.Tensor, batch: int, num_classes: int | None = None) -> None:
    """Refuse labels that are not a (B,) integer tensor with values in [0, num_classes)."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != batch:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise InputError(f"labels must be a ({batch},) tensor of class indices, got {shape}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or (num_classes is not None and int(y.max()) >= num_classes)):
        hi = "" if num_classes is None else f", {num_classes - 1}"
        raise InputError(f"labels must lie in [0{hi}], got [{int(y.min())}, {int(y.max())}]")


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    """A finite number > 0 (or >= 0); returns it as float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def check_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def is_size(v: object) -> bool:
    """A dataset size setting: a count (int >= 1) or a fraction (float in (0, 1])."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v >= 1
    return isinstance(v, float) and 0 < v <= 1
