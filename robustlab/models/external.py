"""A network from outside robustlab as a robustlab classifier, and when user code may run.

:class:`SourceClassifier` wraps any network: mean/std normalisation inside (none unless asked),
an optional bilinear resize to ``input_size``, then the network; so it maps (B, C, H, W) images in
[0, 1] to (B, num_classes) logits like every robustlab classifier. ``prefixes.py`` builds the
``torchvision:``, ``timm:`` and ``python:`` networks in it; :func:`with_normalization` wraps one
of yours. ``python:`` (and a name your module registers) imports and runs your module, which
robustlab does only when asked: ``trust_code=True`` (CLI: ``--trust-code``), :func:`trusting`, or
the environment variable ``ROBUSTLAB_TRUST_CODE=1``.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from ..errors import ConfigError, InputError
from .normalize import Normalize, named_stats, resolve_stats

TRUST_ENV = "ROBUSTLAB_TRUST_CODE"
TRUST_HINT = (f"pass trust_code=True (command line: --trust-code, or set {TRUST_ENV}=1) if you "
              "trust that code")
_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("robustlab_trust", default=False)


def code_trusted() -> bool:
    """Whether user code may be imported now (``trusting(True)`` or ROBUSTLAB_TRUST_CODE=1)."""
    return _TRUSTED.get() or os.environ.get(TRUST_ENV) == "1"


@contextlib.contextmanager
def trusting(trust: bool = True) -> Iterator[None]:
    """Allow ``python:`` networks and user-registered architectures inside the block (``False``
    changes nothing: an enclosing trust, or the environment variable, still holds)."""
    token = _TRUSTED.set(True) if trust else None
    try:
        yield
    finally:
        if token is not None:
            _TRUSTED.reset(token)


class SourceClassifier(nn.Module):
    """``net(resize(normalize(x)))``: a network from elsewhere as a [0, 1]-in, logits-out
    classifier.

    Args:
        net: the network; it sees normalised images (``input_size`` x ``input_size`` if given).
        num_classes: the logits it must return (None: not checked).
        in_channels: image channels. mean, std: one value per channel.
        input_size: resize every batch to this side inside the model (bilinear), or None.
        label: how errors name the network (e.g. ``torchvision:resnet18``).
    """

    def __init__(self, net: nn.Module, *, num_classes: int | None, in_channels: int,
                 mean: Sequence[float], std: Sequence[float], input_size: int | None = None,
                 label: str = "the network") -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, input_size
        self.label = label
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) in [0, 1] -> (B, C, S, S) standardised -> (B, num_classes) logits
        h = self.normalize(x)
        s = self.input_size
        if s is not None and tuple(h.shape[-2:]) != (s, s):
            h = F.interpolate(h, size=(s, s), mode="bilinear", align_corners=False)
        out = _logits(self.net(h), self.label)
        k = self.num_classes
        if out.dim() != 2 or out.shape[0] != x.shape[0] or (k is not None and out.shape[1] != k):
            want = f"({x.shape[0]}, {k if k is not None else 'K'})"
            raise InputError(f"{self.label} returned logits of shape {tuple(out.shape)} for a "
                             f"{tuple(x.shape)} batch, expected {want}: give the network's class "
                             "count as num_classes (--num-classes) and its input side as "
                             "input_size (--input-size)")
        return out


def _logits(out: Any, label: str) -> torch.Tensor:
    """The logits tensor of a network's output (torchvision's InceptionOutputs, a tuple, ...)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise InputError(f"{label} returned a {type(out).__name__}, not a logits tensor")


def with_normalization(model: nn.Module, mean: Sequence[float] | float | str,
                       std: Sequence[float] | float | None = None, *,
                       input_size: int | None = None) -> SourceClassifier:
    """Wrap a network that expects normalised input so that it takes [0, 1] images.

    Args:
        model: maps normalised (B, C, H, W) images to logits.
        mean, std: per-channel statistics, or ``mean`` a named normalisation (``"imagenet"``,
            ``"cifar10"``, ... with ``std`` None).
        input_size: also resize each batch to this side inside (e.g. 224), or None.

    Returns:
        A :class:`SourceClassifier` sharing ``model``'s parameters; ``in_channels`` from the
        statistics (or the first convolution), ``num_classes`` from ``model.num_classes`` if set.
    """
    if isinstance(mean, str):
        if std is not None:
            raise ConfigError("give std only with numeric mean values, not with a named "
                              f"normalisation ({mean!r})")
        mean, std = named_stats(mean)
    channels = _channels(model, mean)
    mean_l = resolve_stats("mean", mean, channels, 0.0)
    std_l = resolve_stats("std", std, channels, 1.0)
    return SourceClassifier(model, num_classes=getattr(model, "num_classes", None),
                            in_channels=channels, mean=mean_l, std=std_l,
                            input_size=check_size(input_size), label=type(model).__name__)


def _channels(model: nn.Module, mean: Any) -> int:
    if isinstance(mean, Sequence) and len(mean) > 1:
        return len(mean)
    given = getattr(model, "in_channels", None)
    if isinstance(given, int):
        return given
    conv = first_conv(model)
    return conv.in_channels if conv is not None else 3


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    """The first ``nn.Conv2d`` of ``model`` in module order, or None."""
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def check_size(input_size: Any) -> int | None:
    """``input_size``: None or an integer side >= 1."""
    return None if input_size is None else check_int("input_size", input_size, minimum=1)
