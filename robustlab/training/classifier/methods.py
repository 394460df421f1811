"""Training methods: how a mini-batch becomes a loss. The trainer's loop never changes; a method does.

A method is a class registered in :data:`METHODS` with a frozen ``Args`` dataclass (its settings,
checked by name and type) and ``loss(model, x, y, generator) -> StepOutput``. Adversarial methods
(FGSM, PGD, TRADES, transfer-adversary injection) register here too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..._checks import check_eps
from ...config import from_dict
from ...errors import ConfigError
from ...registry import Registry

METHODS: Registry[type["Method"]] = Registry("training method")


@dataclass
class StepOutput:
    """What one mini-batch produced: the loss to minimise, the logits scored for train accuracy
    (on whatever inputs the method trains on), and extra 0-d statistics to average over the epoch."""

    loss: torch.Tensor
    logits: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class MethodContext:
    """What a method may need besides the batch: the run's config, data and device."""

    config: Any
    train_data: Any
    num_classes: int
    device: torch.device


class Method:
    """Base class. Subclasses set ``Args`` and implement :meth:`loss`."""

    @dataclass(frozen=True)
    class Args:
        pass

    def __init__(self, args: dict[str, Any], ctx: MethodContext) -> None:
        self.args = from_dict(self.Args, dict(args), where=f"method {self.name!r}")
        self.ctx = ctx

    name = "method"

    @classmethod
    def check_args(cls, args: Any) -> None:
        """Checks of the settings (an ``Args``) that need no data; run before any data is loaded
        (:func:`check_method_args`). Methods override it; the default checks nothing more."""

    def start_epoch(self, epoch: int, model: torch.nn.Module, generator: torch.Generator) -> None:
        """Called before each epoch (e.g. to regenerate a pool of adversarial examples)."""

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator) -> StepOutput:
        raise NotImplementedError


@METHODS.register("standard", help="plain cross-entropy on clean images")
class Standard(Method):
    name = "standard"

    def loss(self, model, x, y, generator):
        logits = model(x)
        return StepOutput(F.cross_entropy(logits, y), logits)


def check_method_eps(method: str, eps: object) -> float:
    """A training method's budget: the one eps rule (:func:`robustlab._checks.check_eps`), > 0,
    the error naming the method; eps 0 is pointed to ``--method standard``."""
    if isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps == 0:
        raise ConfigError(f"method {method!r}: eps must be > 0 (eps 0 is standard training; use "
                          "--method standard)")
    return check_eps(eps, name=f"method {method!r}: eps", positive=True)


def check_method_args(name: str, args: Mapping[str, Any]) -> Any:
    """Before any data is loaded: the method exists, its settings are known and of the right
    type, its eps obeys the one eps rule, and the method's own :meth:`Method.check_args` pass
    (each method checks the rest, such as its source checkpoint's shapes, when it is built).

    Run by :class:`TrainConfig` on construction. Returns the method's typed ``Args``; raises
    ConfigError naming an unknown key and the known ones.
    """
    cls = METHODS.get(name)
    data = dict(args) if isinstance(args, Mapping) else args  # from_dict refuses a non-mapping
    a = from_dict(cls.Args, data, where=f"method {name!r}")
    if getattr(a, "eps", None) is not None:
        check_method_eps(name, a.eps)
    cls.check_args(a)
    return a


def build_method(name: str, args: dict[str, Any], ctx: MethodContext) -> Method:
    return METHODS.get(name)(args, ctx)
