"""Training methods: how a mini-batch becomes a loss. The trainer's loop never changes; a method does.

A method is a class registered in :data:`METHODS` with a frozen ``Args`` dataclass (its settings,
checked by name and type) and ``loss(model, x, y, generator) -> StepOutput``. Adversarial methods
(FGSM, PGD, TRADES, transfer-adversary injection; Free-AT in free.py, YOPO in yopo.py) register
here too.

Replays: a method may ask for several forward-backward passes over each mini-batch
(``replays``). The trainer then calls :meth:`Method.start_batch` once, and per replay ``loss``,
the backward pass and :meth:`Method.after_backward` (which reads the gradients that backward
left, e.g. an input perturbation's). With ``step_each_replay`` every replay ends in an optimiser
step (Free-AT); otherwise the replays' gradients are summed into one step (YOPO).
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
    model: Any = None  # the model the run trains (a method may need to look inside it: YOPO)


class Method:
    """Base class. Subclasses set ``Args`` and implement :meth:`loss`."""

    @dataclass(frozen=True)
    class Args:
        pass

    def __init__(self, args: dict[str, Any], ctx: MethodContext) -> None:
        self.args = from_dict(self.Args, dict(args), where=f"method {self.name!r}")
        self.ctx = ctx

    name = "method"
    replays: int = 1                # forward-backward passes per mini-batch
    step_each_replay: bool = False  # True: an optimiser step after every replay

    @classmethod
    def check_args(cls, args: Any) -> None:
        """Checks of the settings (an ``Args``) that need no data; run before any data is loaded
        (:func:`check_method_args`). Methods override it; the default checks nothing more."""

    @classmethod
    def check_config(cls, cfg: Any, args: Any) -> None:
        """Checks of the rest of the training config (``cfg``, a TrainConfig) against the
        method's settings: options it cannot honour are refused here, before any data is loaded.
        The default refuses nothing."""

    def start_epoch(self, epoch: int, model: torch.nn.Module, generator: torch.Generator) -> None:
        """Called before each epoch (e.g. to regenerate a pool of adversarial examples)."""

    def start_batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> None:
        """Called once per mini-batch (this process's shard) before its replays. The shard is
        empty only under torchrun, for a model with global batch norm, when the last batch is
        smaller than the number of processes."""

    def after_backward(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                       out: StepOutput) -> None:
        """Called after each replay's backward pass, before the gradients are combined over
        processes and stepped; may read the gradients (and add to the weights' own)."""

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


def check_method_config(cfg: Any) -> None:
    """The method's settings (:func:`check_method_args`), then the options of ``cfg`` (a
    TrainConfig) the method cannot honour (:meth:`Method.check_config`). Run by TrainConfig."""
    METHODS.get(cfg.method).check_config(cfg, check_method_args(cfg.method, cfg.method_args))


def check_count(method: str, key: str, value: object, what: str) -> int:
    """A method's count setting: an integer >= 1 (``what`` says what it counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"method {method!r}: {key} ({what}) must be an integer >= 1, got "
                          f"{value!r}")
    return value


def refuse_fp16(method: str, cfg: Any, why: str) -> None:
    """Refuse ``--amp fp16`` for a method whose input step reads the gradients of a replay: the
    gradient scaler may skip such a step on overflow, but the inf/NaN input gradient it skipped
    would still move the perturbation (``why`` says which)."""
    if cfg.amp == "fp16":
        raise ConfigError(f"method {method!r} cannot train with --amp fp16: {why} reads the "
                          "loss-scaled gradient of every replay, and a step the gradient scaler "
                          "skips on overflow would still move it by an inf/NaN gradient; use "
                          "--amp bf16 (no loss scaling) or --amp none")


def build_method(name: str, args: dict[str, Any], ctx: MethodContext) -> Method:
    return METHODS.get(name)(args, ctx)
