"""Mean/std normalisation as a layer, so that every classifier takes raw [0, 1] pixels."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..registry import Registry

Stats = tuple[tuple[float, ...], tuple[float, ...]]
# named (mean, std) for networks trained elsewhere (``--normalization imagenet``); one value is
# repeated to every channel
NORMALIZATIONS: Registry[Stats] = Registry("normalisation")
NORMALIZATIONS.register("imagenet", help="ImageNet (torchvision's and timm's pre-processing)")(
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
NORMALIZATIONS.register("cifar10", help="CIFAR-10 training set")(
    ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)))
NORMALIZATIONS.register("cifar100", help="CIFAR-100 training set")(
    ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)))
NORMALIZATIONS.register("mnist", help="MNIST training set")(((0.1307,), (0.3081,)))
NORMALIZATIONS.register("half", help="(x - 0.5) / 0.5: inputs in [-1, 1]")(((0.5,), (0.5,)))
NORMALIZATIONS.register("none", help="no normalisation: the network sees [0, 1] pixels")(
    ((0.0,), (1.0,)))


def named_stats(name: str) -> Stats:
    """(mean, std) of the normalisation ``name`` (UnknownNameError lists the known ones)."""
    return NORMALIZATIONS.get(name)


def resolve_stats(name: str, values: Sequence[float] | float | None, channels: int,
                  default: float) -> list[float]:
    """Per-channel statistics as a list of ``channels`` floats.

    ``None`` gives ``default`` for every channel; a number or a length-1 sequence is repeated.
    Raises :class:`ConfigError` for a wrong length or a non-finite value.
    """
    if values is None:
        values = [default]
    elif isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    try:
        out = [float(v) for v in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of numbers, got {values!r}") from None
    if len(out) == 1:
        out = out * channels
    if len(out) != channels:
        raise ConfigError(f"{name} has {len(out)} values but the model has {channels} input "
                          f"channels; give one value per channel or a single value")
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{name} must be finite, got {out}")
    return out


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first layer of every robustlab classifier.

    Args:
        mean: one value per channel.
        std: one strictly positive value per channel.

    ``mean`` and ``std`` are buffers of shape (1, C, 1, 1); they follow ``.to()`` and are saved in
    the state dict, so a checkpoint carries its own normalisation.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != len(std) or not mean:
            raise ConfigError(f"mean and std need the same number of channels (>= 1), "
                              f"got {len(mean)} and {len(std)}")
        if not all(math.isfinite(s) and s > 0 for s in std):
            raise ConfigError(f"std must be finite and > 0 for every channel, got {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) in [0, 1] -> (B, C, H, W) standardised. Only shapes are checked here: a
        # range check would synchronise the device on every forward pass of an attack.
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise InputError(f"expected a (B, {self.channels}, H, W) image batch, "
                             f"got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        def fmt(t: torch.Tensor) -> str:
            return "[" + ", ".join(f"{v:.4g}" for v in t.flatten().tolist()) + "]"

        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"
