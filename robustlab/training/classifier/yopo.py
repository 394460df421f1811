"""YOPO-m-n: You Only Propagate Once (Zhang et al. 2019).

The network is split after its first layer ``f0`` (:mod:`robustlab.models.first_layer`). Per
mini-batch, from ``eta`` uniform in the eps-ball (``random_start``, clamped so x + eta is in
[0, 1]) or zero::

    for j in 1..m:                                  outer iterations (the trainer's replays)
        one full forward + backward at x + eta:     the loss L_j, the gradient of every weight
            after f0, and the adjoint p_j = dL_j / d f0(x + eta), where the backward stops
        n times, through f0 only (cheap):           eta <- clip_eps(eta + step *
            sign(grad_eta (p_j . f0(x + eta)))), then x + eta clamped into [0, 1]
        f0's weights: grad_theta0 (p_j . f0(x + eta))   at the updated eta, p_j held fixed
    one optimiser step on the gradients summed over the m passes

This is the paper's Algorithm 1 as its authors' code runs it: the weights after ``f0`` take the
gradient the m full passes give for free (summed, the paper's Sigma_j: with SGD the learning rate
then acts m times larger than for one pass); ``f0``'s weights take the Hamiltonian's gradient at
the perturbation each outer iteration ends with (the paper's U_0 update; the full passes give
``f0`` none). Defaults: YOPO-5-3, eps 8/255, inner step 2/255 (the paper's CIFAR setting). The
full passes run in train mode (batch norm sees every one); ``train_loss``/``train_acc`` are means
over them. :func:`inner_updates` is the adversary's part alone, which contrastive pre-training
uses (``--adversary yopo``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...attacks import ascent_step, project, random_start
from ...errors import ConfigError, InputError
from ...models.first_layer import FirstLayer, find_first_layer
from ...shard import shard_start
from .adversarial import check_step
from .methods import METHODS, Method, StepOutput, check_count, check_method_eps, refuse_fp16


def start_perturbation(x: Tensor, eps: float, generator: torch.Generator | None,
                       random: bool = True) -> Tensor:
    """YOPO's eta_{1,0}: uniform in the linf eps-ball with x + eta in [0, 1] (or zero). Inside a
    sharded step (:func:`robustlab.shard.sharded`) this rank's rows of the start one process
    draws for the global batch, so the generator stays in step with one process's."""
    if not random:
        return torch.zeros_like(x, dtype=torch.promote_types(x.dtype, torch.float32))
    start = shard_start(x, eps, generator)
    if start is None:
        start = random_start(x, eps, "linf", generator)
    return start - x


def inner_updates(layer: FirstLayer, model: nn.Module, x: Tensor, eta: Tensor, p: Tensor, *,
                  eps: float, step_size: float, n: int) -> Tensor:
    """YOPO's n inner updates of the perturbation through the first layer only.

    ``eta <- clip_eps(eta + step_size * sign(grad_eta (p . f0(x + eta))))``, then x + eta clamped
    into [0, 1], n times, with the adjoint ``p`` held fixed.

    Args:
        layer: the first layer f0 of ``model``. x: (B, C, H, W) clean images in [0, 1].
        eta: (B, C, H, W) current perturbation. p: the adjoint dL/d f0(x + eta), f0's output shape.
    Returns:
        the updated perturbation (detached, float32 or wider).
    """
    p = p.detach()
    for _ in range(n):
        eta = eta.detach().requires_grad_()
        hamiltonian = (p * layer.output(model, x + eta)).sum()
        (grad,) = torch.autograd.grad(hamiltonian, eta)
        eta = project(ascent_step(x + eta.detach(), grad, step_size, "linf"), x, eps, "linf") - x
    return eta.detach()


def first_layer_grad(layer: FirstLayer, model: nn.Module, x_adv: Tensor, p: Tensor) -> None:
    """Add grad_theta0 (p . f0(x_adv)) to the first layer's weights' ``.grad`` (the only tensors
    it reaches); nothing when they are frozen (linear probe)."""
    params = [q for q in layer.module.parameters() if q.requires_grad]
    if params:
        hamiltonian = (p.detach() * layer.output(model, x_adv)).sum()
        torch.autograd.backward(hamiltonian, inputs=params)


@METHODS.register("yopo", help="YOPO-m-n: m full forward-backward passes per mini-batch (adjoint "
                  "at the first layer, weights' gradients summed into one step), each followed by "
                  "n cheap updates of the perturbation through the first layer only "
                  "(Zhang et al. 2019)")
class YOPOTraining(Method):
    name = "yopo"

    @dataclass(frozen=True)
    class Args:
        eps: float = 8 / 255
        m: int = 5                          # outer iterations: full passes per mini-batch
        n: int = 3                          # inner updates through the first layer per pass
        step_size: float = 2 / 255          # the inner update's step
        random_start: bool = True
        first_layer: Optional[str] = None   # None: the model's robustlab_first_layer, or found

    @classmethod
    def check_args(cls, a: Any) -> None:
        check_count(cls.name, "m", a.m, "outer iterations, full passes per mini-batch")
        check_count(cls.name, "n", a.n, "inner updates through the first layer per pass")
        check_step(cls.name, a.step_size)

    @classmethod
    def check_config(cls, cfg: Any, a: Any) -> None:
        refuse_fp16(cls.name, cfg, "the perturbation step through the first layer")
        if cfg.compile:
            raise ConfigError("method 'yopo' cannot train a compiled model (--compile): it stops "
                              "the forward pass after the first layer from a module hook, which "
                              "a compiled graph does not run; drop --compile")

    def __init__(self, args: dict[str, Any], ctx: Any) -> None:
        super().__init__(args, ctx)
        a = self.args
        check_method_eps(self.name, a.eps)
        self.check_args(a)
        if getattr(ctx, "model", None) is None:
            raise ConfigError("method 'yopo' needs the model it trains (MethodContext.model) to "
                              "find its first layer")
        probe = ctx.train_data.images[:2].to(ctx.device, torch.float32) / 255  # (2, C, H, W)
        self.layer = find_first_layer(ctx.model, probe, a.first_layer)
        self.replays = a.m
        self.eta: Optional[Tensor] = None
        self._leaf: Optional[Tensor] = None

    def start_batch(self, x, y, generator) -> None:
        self.eta = start_perturbation(x, self.args.eps, generator, self.args.random_start)

    def loss(self, model, x, y, generator):
        with self.layer.adjoint() as leaves:
            logits = model(x + self.eta)  # (B, K), train mode; the backward stops at f0's output
        if len(leaves) != 1:
            raise InputError(f"method 'yopo': the forward pass ran the first layer "
                             f"{self.layer.name!r} {len(leaves)} times, not once")
        self._leaf = leaves[0]
        return StepOutput(F.cross_entropy(logits, y), logits)

    def after_backward(self, model, x, y, out) -> None:
        p = self._leaf.grad  # (B, C0, H0, W0): dL/d f0(x + eta), L as this rank back-propagated it
        if p is None:
            raise InputError(f"method 'yopo': the loss does not depend on the output of the "
                             f"first layer {self.layer.name!r}")
        a = self.args
        self.eta = inner_updates(self.layer, model, x, self.eta, p, eps=a.eps,
                                 step_size=a.step_size, n=a.n)
        first_layer_grad(self.layer, model, x + self.eta, p)
        self._leaf = None
