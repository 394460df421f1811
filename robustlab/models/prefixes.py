"""Networks from elsewhere by name: ``MODELS`` resolves three prefixes through this module, so
``create``, checkpoints, trainers and every command take them like registered names::

    torchvision:NAME          torchvision.models.get_model(NAME, weights=None, num_classes=...)
    timm:NAME                 timm.create_model(NAME, pretrained=False, ...) (optional extra)
    python:MODULE:FACTORY     FACTORY from the importable MODULE (opt-in: trust_code=True)

Each is built inside a :class:`~robustlab.models.external.SourceClassifier`. Weights never come
from a download: they come from a file (``load_weights``, or a checkpoint). A ``python:`` factory
gets ``num_classes`` and ``in_channels`` when its signature names them, and the ``args`` given.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError, UnknownNameError
from .external import TRUST_HINT, SourceClassifier, check_size, code_trusted
from .factory import MODELS

Net = Callable[[Any, int, dict], nn.Module]  # (num_classes or None, in_channels, args) -> network


def _check_args(args: Any, label: str) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise ConfigError(f"args of {label} must be a mapping of keyword arguments, got {args!r}")
    return dict(args)


def _source(prefix: str, make: Callable[[str], tuple[Net, str | None]]) -> None:
    """Register ``PREFIX:REST`` in MODELS: ``make(REST)`` checks the name (importing what it
    needs) and returns the network builder and the user module it runs (or None)."""

    def resolve(rest: str) -> Callable[..., nn.Module]:
        label = f"{prefix}:{rest}"
        build_net, code = make(rest)

        def factory(num_classes: int | None, in_channels: int, width: float,
                    mean: Sequence[float], std: Sequence[float], input_size: int | None = None,
                    args: dict | None = None) -> SourceClassifier:
            if width != 1.0:
                raise ConfigError(f"{label} has no width multiplier, got width={width}; leave "
                                  "it at 1 (no --width)")
            size, kwargs = check_size(input_size), _check_args(args, label)
            net = build_net(num_classes, in_channels, kwargs)
            if not isinstance(net, nn.Module):
                raise ConfigError(f"{label} returned a {type(net).__name__}, not an nn.Module")
            return SourceClassifier(net, num_classes=num_classes, in_channels=in_channels,
                                    mean=mean, std=std, input_size=size, label=label)

        factory.default_stats = (0.0, 1.0)  # a network from elsewhere: no normalisation unasked
        factory.code_module = code
        factory.__doc__ = f"{label}, wrapped to take [0, 1] images"
        return factory

    MODELS.register_source(prefix, resolve)


def _torchvision(name: str) -> tuple[Net, None]:
    from torchvision import models as tvm

    known = tvm.list_models(module=tvm)
    if name not in known:
        raise UnknownNameError(_unknown("torchvision", name, known))

    def build(num_classes: int | None, in_channels: int, args: dict) -> nn.Module:
        kwargs = {**args, **({} if num_classes is None else {"num_classes": num_classes})}
        net = tvm.get_model(name, weights=None, **kwargs)
        if in_channels != 3:
            adapt_first_conv(net, in_channels, f"torchvision:{name}")
        return net

    return build, None


def adapt_first_conv(net: nn.Module, in_channels: int, label: str) -> None:
    """Replace the first (3-channel) convolution of ``net`` by one taking ``in_channels``."""
    for parent in net.modules():
        for key, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                parent._modules[key] = nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None,
                    child.padding_mode)
                return
    raise ConfigError(f"{label} has no convolution to adapt to in_channels={in_channels}")


def _timm(name: str) -> tuple[Net, None]:
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise ConfigError(f"timm:{name} needs the optional package timm, which is not installed: "
                          "pip install 'robustlab[timm]' (or pip install timm)") from None
    is_model = getattr(timm, "is_model", None)
    if callable(is_model) and not is_model(name):
        listing = getattr(timm, "list_models", None)
        raise UnknownNameError(_unknown("timm", name, listing() if callable(listing) else []))

    def build(num_classes: int | None, in_channels: int, args: dict) -> nn.Module:
        kwargs = {"pretrained": False, "in_chans": in_channels, **args}
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        return timm.create_model(name, **kwargs)

    return build, None


def _python(ref: str) -> tuple[Net, str]:
    label = f"python:{ref}"
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{label} is not of the form python:MODULE:FACTORY (e.g. "
                          "python:mypkg.nets:build), where FACTORY builds the network")
    if not code_trusted():
        raise ConfigError(f"{label} imports and runs {module_name}, which robustlab does only "
                          f"when asked: {TRUST_HINT}")
    fn = resolve_code(module_name, attr, label)

    def build(num_classes: int | None, in_channels: int, args: dict) -> nn.Module:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        kwargs = dict(args)
        for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if value is not None and key in params and key not in kwargs:
                kwargs[key] = value  # passed only to a factory that names the argument
        try:
            return fn(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{label}({', '.join(kwargs)}) failed: {exc}") from None

    return build, module_name


def resolve_code(module_name: str, attr: str, label: str) -> Callable[..., Any]:
    """``MODULE.ATTR`` of the user's code, imported (ConfigError saying how to fix a miss)."""
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{label}: cannot import {module_name} ({exc}); put the folder that "
                          "holds it on PYTHONPATH") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{label}: module {module_name} has no {attr!r}")
    if not callable(obj):
        raise ConfigError(f"{label}: {module_name}.{attr} is a {type(obj).__name__}, not a "
                          "function or class that builds the network")
    return obj


def _unknown(prefix: str, name: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f" Did you mean {', '.join(f'{prefix}:{c}' for c in close)}?" if close else ""
    return f"unknown {prefix} model {name!r}.{hint} ({len(known)} {prefix} models are known)"


def class_count(name: str, in_channels: int, input_size: int | None = None,
                args: dict | None = None) -> int:
    """How many logits the network ``name`` (``torchvision:``/``timm:``/``python:``) returns with
    its own default class count: one forward pass on the meta device (nothing allocated), on
    the CPU for code that cannot run there."""
    factory = MODELS.get(name)
    side = input_size or (32 if name.startswith("python:") else 224)
    mean, std = [0.0] * in_channels, [1.0] * in_channels
    for device in ("meta", "cpu"):
        try:
            with torch.device(device), torch.no_grad():
                model = factory(None, in_channels, 1.0, mean, std, input_size, args).eval()
                out = model(torch.zeros(1, in_channels, side, side))
            return int(out.shape[-1])
        except (ConfigError, UnknownNameError):
            raise
        except Exception as exc:  # user code of any kind; a real pass on the CPU, then give up
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    raise ConfigError(f"cannot tell how many classes {name} predicts (a forward pass on a "
                      f"(1, {in_channels}, {side}, {side}) batch failed: {why}); give it as "
                      "num_classes (--num-classes) and the input side as input_size "
                      "(--input-size)")


_source("torchvision", _torchvision)
_source("timm", _timm)
_source("python", _python)
