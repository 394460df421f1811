"""FGSM (Goodfellow et al. 2015) and Fast-FGSM / FGSM-RS (Wong et al. 2020): one-step attacks.

Both are the PGD engine with ``steps=1``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .._checks import check_eps, check_positive
from ..errors import ConfigError
from .engine import pgd
from ..defaults import default_step
from .geometry import check_norm


def fgsm(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, *, eps: float,
         norm: str = "linf", objective: str | Callable = "ce", **kw: Any) -> Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): x + eps * sign(grad_x loss), clamped.

    One step of size eps from x, no random start (for norm "l2": one normalised-gradient step).

    Args:
        model: classifier on [0, 1] images. x: (B, C, H, W) in [0, 1]. y: (B,) labels.
        eps: the budget (also the step). norm: "linf" or "l2". objective: see :func:`pgd`.
        **kw: further :func:`pgd` options (targeted, amp_dtype, objective_kwargs).
    Returns:
        x_adv: same shape/dtype/device as x, in [0, 1], within eps of x.
    """
    _reject_fixed("fgsm", kw, ("steps", "step_size", "random_start", "restarts", "generator"))
    # eps 0 returns x; a step must still be valid
    step = default_step("fgsm", check_eps(eps, check_norm(norm))) or 1.0
    return pgd(model, x, y, eps=eps, step_size=step, steps=1, norm=norm, random_start=False,
               objective=objective, **kw)


def fast_fgsm(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, *, eps: float,
              step_size: float | None = None, norm: str = "linf",
              generator: torch.Generator | None = None, **kw: Any) -> Tensor:
    """Fast-FGSM / FGSM-RS (Wong et al. 2020, "Fast is better than free").

    A uniform random start in the eps-ball, then one step of ``step_size`` (default
    ``default_step("fast-fgsm", eps)``, 1.25 * eps),
    projected back onto the ball and [0, 1].

    Args:
        model, x, y: as for :func:`fgsm`. eps: the budget. step_size: None for the default.
        norm: "linf" or "l2". generator: torch.Generator for the random start.
        **kw: further :func:`pgd` options (objective, targeted, amp_dtype, objective_kwargs).
    Returns:
        x_adv: same shape/dtype/device as x, in [0, 1], within eps of x.
    """
    _reject_fixed("fast_fgsm", kw, ("steps", "random_start", "restarts"))
    if step_size is None:
        step_size = default_step("fast-fgsm", check_eps(eps, check_norm(norm))) or 1.0
    else:
        check_positive("step_size", step_size)
    return pgd(model, x, y, eps=eps, step_size=step_size, steps=1, norm=norm, random_start=True,
               generator=generator, **kw)


def _reject_fixed(attack: str, kw: dict[str, Any], fixed: tuple[str, ...]) -> None:
    bad = sorted(set(kw) & set(fixed))
    if bad:
        raise ConfigError(f"{attack} fixes {', '.join(fixed)}; do not pass {', '.join(bad)} "
                          "(use pgd for multi-step attacks)")
