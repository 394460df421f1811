"""Validation of the public pixel/label contract and of finite weights, shared by attacks, trainers,
evaluators and checkpoints."""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

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


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``tensors`` that hold a NaN or an infinity, in order.

    Integer tensors (e.g. BatchNorm's ``num_batches_tracked``) are skipped. One device sync per
    tensor: call it per epoch or per checkpoint, not per step.
    """
    return [name for name, t in tensors.items()
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())]


def check_finite_module(module: nn.Module) -> list[str]:
    """Names of ``module``'s parameters and buffers with NaN or infinite values (empty: all finite).

    Buffers count as much as weights: a diverged run can keep finite parameters while a
    BatchNorm ``running_var`` overflows, and eval mode then outputs NaN.
    """
    named = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    return nonfinite_tensors({k: v.detach() for k, v in named.items()})


def check_eps(eps: object, norm: str = "linf", *, name: str = "eps",
              positive: bool = False) -> float:
    """The one rule for a perturbation budget, used by every attack, trainer and command.

    A finite number >= 0 (> 0 with ``positive``) in [0, 1] pixel units; under linf it cannot
    exceed 1 (the whole pixel range), so a value such as 8 is refused with "did you mean 8/255?".
    An l2 budget may exceed 1 (it is a norm over all pixels).
    """
    if isinstance(eps, bool):
        raise ConfigError(f"{name} must be a number, got {eps!r}")
    try:
        v = float(eps)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {eps!r}") from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be {bound}, a finite number in [0, 1] pixel units "
                          f"(e.g. 8/255), got {eps!r}")
    if norm == "linf" and v > 1:
        raise ConfigError(f"{name} is in [0, 1] pixel units (8/255 = 0.0314), got {eps!r}; "
                          f"did you mean {v:g}/255?")
    return v


def model_dtype(model: object) -> torch.dtype | None:
    """The floating dtype of ``model``'s first floating parameter or buffer (None: unknown)."""
    if not isinstance(model, torch.nn.Module):
        return None
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


class CastInput(torch.nn.Module):
    """``model`` fed in its own dtype: float64 (or float16) images from a user reach a float32
    model as float32, instead of failing inside its first layer."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype))


def fed_in_dtype(model, x: torch.Tensor):
    """``model`` itself, or a :class:`CastInput` around it when ``x``'s float dtype differs from
    the model's."""
    dtype = model_dtype(model)
    if dtype is None or not x.is_floating_point() or x.dtype == dtype:
        return model
    return CastInput(model, dtype)
