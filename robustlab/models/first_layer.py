"""A network's first layer, and running a network only up to it (for YOPO, Zhang et al. 2019).

YOPO splits a network ``f = g o f0`` after its first layer ``f0``: one full pass gives the adjoint
``p = dL/d f0(x + eta)``, then the perturbation is updated through ``f0`` alone. Everything the
forward pass runs before ``f0`` (the Normalize layer, a resize) has no weights and belongs to
``f0``'s input side: :meth:`FirstLayer.output` runs the network's own forward and stops as soon as
``f0`` has produced its output, so nothing needs to know what came before.

:func:`find_first_layer` runs the network once on a probe and takes the first module with
weights of its own that the forward pass calls: a convolution for every registered classifier
(small-cnn, resnet18 and vgg ``blocks.0.0``, preact-resnet18 ``blocks.0``, resnet18-imagenet
``conv1``, vgg16-imagenet ``features.0``). A network names it itself with the attribute
``robustlab_first_layer = "conv1"`` (a name from its ``named_modules()``; on a wrapped network the
name is relative to the module holding the attribute), or the caller passes ``name``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn

from ..errors import ConfigError, InputError

FIRST_LAYER_ATTR = "robustlab_first_layer"
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


class _Reached(Exception):
    """Raised by the hook once the first layer has run: the rest of the forward is not needed."""


@dataclass(frozen=True)
class FirstLayer:
    """The first layer ``f0`` of a network: its module name and the module itself."""

    name: str
    module: nn.Module

    def output(self, model: nn.Module, x: Tensor) -> Tensor:
        """``f0``'s output for input ``x``: ``model``'s forward, stopped once ``f0`` has run.

        Args:
            model: the network ``f0`` belongs to. x: its input, e.g. (B, C, H, W) in [0, 1].
        Returns:
            ``f0``'s output (e.g. (B, C0, H0, W0)), differentiable w.r.t. ``x`` and ``f0``'s
            weights.
        """
        got: list[Tensor] = []

        def stop(_module, _args, out):
            got.append(out)
            raise _Reached

        handle = self.module.register_forward_hook(stop)
        try:
            model(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not got:
            raise InputError(f"the forward pass of {type(model).__name__} never ran its first "
                             f"layer {self.name!r}")
        return got[0]

    @contextmanager
    def adjoint(self) -> Iterator[list[Tensor]]:
        """Inside the block, ``f0``'s output enters the rest of the network as a fresh leaf that
        requires grad, appended to the yielded list. A backward pass then stops there: the leaf's
        ``.grad`` is the adjoint ``p = dL/d f0``, and neither ``f0``'s weights nor the input get a
        gradient (YOPO's full pass does not propagate through ``f0``)."""
        leaves: list[Tensor] = []

        def cut(_module, _args, out):
            leaf = out.detach().requires_grad_()
            leaves.append(leaf)
            return leaf.clone()  # what follows may work in place (ReLU(inplace=True)); a leaf can't

        handle = self.module.register_forward_hook(cut)
        try:
            yield leaves
        finally:
            handle.remove()


def find_first_layer(model: nn.Module, probe: Tensor, name: str | None = None, *,
                     who: str = "method 'yopo'") -> FirstLayer:
    """The first layer of ``model``: ``name``, else the one the network names itself
    (``robustlab_first_layer``), else the first module with weights the forward pass calls.

    Args:
        model: the network. probe: a small input batch (>= 2 samples; run once in eval mode, no
            gradient, the network's train/eval flags put back).
        name: a module name from ``model.named_modules()``.
        who: what splits the network, for the messages.
    Raises:
        ConfigError: no such module; a module with weights runs before the named one; the layer
            runs more than once or contains batch norm (whose statistics the cheap passes through
            ``f0`` would move); found automatically, it is not a convolution or linear layer.
    """
    cls = type(model).__name__
    hint = (f"name it: set the attribute {FIRST_LAYER_ATTR} = \"NAME\" on the network or pass "
            f"method_args.first_layer=NAME (a name from model.named_modules())")
    named = dict(model.named_modules())
    name = name if name is not None else _named_by_model(model)
    if name is not None and (not name or name not in named):
        some = ", ".join(n for n, m in named.items() if n and _has_weights(m))
        raise ConfigError(f"{who}: {cls} has no module {name!r} to split after; its modules with "
                          f"weights: {_shorten(some)}")
    calls = _call_order(model, probe)
    if name is None:
        first = next((n for n in calls if _has_weights(named[n])), None)
        if first is None or first == "":
            what = ("runs no module with weights" if first is None else
                    "holds weights directly, so its first layer is no sub-module")
            raise ConfigError(f"{who} splits the network after its first layer, but {cls} "
                              f"{what}; {hint}")
        if not isinstance(named[first], _LAYERS):
            raise ConfigError(f"{who} splits the network after its first layer, a convolution or "
                              f"linear layer, but the first module with weights {cls} runs is "
                              f"{first!r} ({type(named[first]).__name__}); {hint}")
        name = first
    _check_split(named, calls, name, cls, who)
    return FirstLayer(name, named[name])


def _named_by_model(model: nn.Module) -> str | None:
    """The first layer a module names with ``robustlab_first_layer`` (the outermost one that
    does, its name prefixed with where that module sits)."""
    for prefix, module in model.named_modules():
        own = getattr(module, FIRST_LAYER_ATTR, None)
        if isinstance(own, str):
            return f"{prefix}.{own}" if prefix else own
    return None


def _call_order(model: nn.Module, probe: Tensor) -> list[str]:
    """The names of the modules ``model``'s forward calls on ``probe``, in call order."""
    calls: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _a, n=n: calls.append(n))
               for n, m in model.named_modules()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return calls


def _check_split(named: dict[str, nn.Module], calls: list[str], name: str, cls: str,
                 who: str) -> None:
    """``name`` runs once, no module with weights runs before it, and it holds no batch norm."""
    count = calls.count(name)
    if count != 1:
        raise ConfigError(f"{who}: {cls} runs {name!r} {count} times in one forward pass; the "
                          "first layer must run exactly once")
    inside = name + "."
    before = [n for n in calls[:calls.index(name)]
              if n and not inside.startswith(n + ".") and _has_weights(named[n])]
    if before:
        raise ConfigError(f"{who}: {cls} runs {before[0]!r}, which has weights, before {name!r}; "
                          "the first layer must be the first module with weights")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in named[name].modules()):
        raise ConfigError(f"{who}: the first layer {name!r} of {cls} contains batch norm, whose "
                          "running statistics the cheap passes through it would move; name a "
                          "layer before the batch norm")


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(", ", 1)[0] + ", ..."
