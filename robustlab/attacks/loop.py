"""The inner loop of the PGD engine: start, gradient, step, and scoring of finished runs.

Per step: one forward and one backward (gradient w.r.t. the input only), the ascent step and the
projection (both in float32). No host syncs inside the loop: a non-finite-gradient flag is kept on
the device and read once at the end.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..runtime import amp_context
from .geometry import ascent_step, project, random_start
from .objectives import LogitObjective


@dataclass(frozen=True)
class Plan:
    """Validated settings of one engine run."""

    eps: float
    step_size: float
    steps: int
    norm: str
    random_start: bool
    targeted: bool
    amp: torch.dtype | None
    generator: torch.Generator | None
    init: Tensor | None = None  # a given first iterate (e.g. TRADES' x + 0.001 N(0, 1))


def autocast(x: Tensor, amp: torch.dtype | None):
    """torch.autocast on x's device type with ``amp`` (a no-op context when None): the one
    autocast of robustlab, ``runtime.amp_context``."""
    return amp_context(amp, x.device)


def start(x: Tensor, plan: Plan) -> Tensor:
    """The first iterate: ``plan.init`` projected onto the ball and [0, 1], a uniform random point
    of the ball, or a copy of x."""
    if plan.init is not None:
        return project(plan.init.detach(), x, plan.eps, plan.norm)
    if plan.random_start:
        return random_start(x, plan.eps, plan.norm, plan.generator)
    return x.clone()


def input_grad(obj: Callable, x_adv: Tensor, plan: Plan) -> tuple[Tensor, Tensor]:
    """(gradient of the summed loss w.r.t. x_adv, negated when targeted; the (B,) losses)."""
    x_adv.requires_grad_(True)
    with autocast(x_adv, plan.amp):
        loss = obj(x_adv)
    total = loss.sum()
    if not total.requires_grad:  # the loss does not depend on the input at all (masked gradients)
        warnings.warn("the attack objective does not depend on the input: its gradient is zero "
                      "(gradient masking?); try BPDA or a gradient-free attack", RuntimeWarning)
        return torch.zeros_like(x_adv), loss.detach()
    (g,) = torch.autograd.grad(-total if plan.targeted else total, x_adv)
    return g, loss.detach()


def step(x_adv: Tensor, g: Tensor, x: Tensor, plan: Plan) -> Tensor:
    """Ascent step then projection onto the ball and [0, 1]."""
    return project(ascent_step(x_adv.detach(), g, plan.step_size, plan.norm), x, plan.eps,
                   plan.norm)


def clean_grad(g: Tensor) -> tuple[Tensor, Tensor]:
    """(g with NaN/inf set to 0, a 0-d device bool saying whether there were any; no sync)."""
    finite = torch.isfinite(g)
    return torch.where(finite, g, 0.0), ~finite.all()


def run_full(obj: Callable, x: Tensor, plan: Plan) -> tuple[Tensor, Tensor]:
    """``plan.steps`` ascent steps from ``start``. Returns (final iterate, non-finite-grad flag)."""
    x_adv = start(x, plan)
    bad = torch.zeros((), dtype=torch.bool, device=x.device)
    for _ in range(plan.steps):
        g, bad_g = clean_grad(input_grad(obj, x_adv, plan)[0])
        bad = bad | bad_g
        x_adv = step(x_adv, g, x, plan)
    return x_adv, bad


def fooled_by(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """(B,) bool: the prediction differs from y (equals y when targeted)."""
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def score(obj: Callable, x_adv: Tensor, y: Tensor | None, plan: Plan) -> Tensor:
    """Per-sample score of a finished run, higher is better for the attacker; +inf if it fools."""
    with torch.no_grad(), autocast(x_adv, plan.amp):
        if isinstance(obj, LogitObjective):
            logits = obj.model(x_adv)
            loss = obj.from_logits(logits).float()
        else:
            logits, loss = None, obj(x_adv).float()
    s = -loss if plan.targeted else loss
    if logits is not None and y is not None:
        s = torch.where(fooled_by(logits, y, plan.targeted), torch.inf, s)
    return torch.nan_to_num(s, nan=-torch.inf)


def warn_nonfinite(bad: Tensor) -> None:
    """Warn (one sync, after the loop) when a run met NaN/inf input gradients."""
    if bool(bad):
        warnings.warn("the attack met NaN/inf input gradients (treated as 0): the objective or "
                      "model is not differentiable there, so robust accuracy may be overestimated",
                      RuntimeWarning, stacklevel=3)
