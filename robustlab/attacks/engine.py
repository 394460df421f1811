"""The one projected-gradient engine (Madry et al. 2018), parameterised by an objective.

FGSM, Fast-FGSM, PGD, feature distortion, the TRADES inner maximisation and the contrastive attack
are all this loop with different settings and objectives. Per step it does exactly one forward and
one backward (gradient w.r.t. the input only), the ascent step and the projection, with no host
syncs except in early-stop mode.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .._checks import check_int, check_positive, fed_in_dtype
from ..errors import ConfigError, InputError
from .. import runtime
from .early_stop import run_early
from .geometry import check_eps, check_norm, work_dtype
from .loop import Plan, autocast, run_full, score, warn_nonfinite
from .mode import frozen_eval
from .objectives import LogitObjective, needs_labels
from .validate import (check_bool, check_generator, check_inputs, check_model, check_objective,
                       objective_name)


def pgd(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor | None = None, *, eps: float,
        step_size: float, steps: int, norm: str = "linf", random_start: bool = True,
        restarts: int = 1, objective: str | Callable = "ce", targeted: bool = False,
        generator: torch.Generator | None = None, early_stop: bool = False,
        amp_dtype: torch.dtype | str | None = None,
        objective_kwargs: dict[str, Any] | None = None, init: Tensor | None = None) -> Tensor:
    """Projected gradient ascent on an objective inside the (norm, eps) ball (Madry et al. 2018).

    Args:
        model: classifier (or, for label-free objectives such as "feature", any differentiable
            module) taking (B, C, H, W) images in [0, 1]. Run in eval mode with frozen parameters;
            its modes and requires_grad flags are restored afterwards.
        x: (B, C, H, W) float images in [0, 1]; never modified.
        y: (B,) labels (the target classes when ``targeted``); None for label-free objectives.
        eps: radius in [0, 1] pixel units; 0 returns a copy of x. step_size: > 0. steps: >= 1.
        norm: "linf" (sign steps) or "l2" (normalised-gradient steps).
        random_start: start from a uniform random point of the ball (else from x).
        restarts: independent runs; per sample the one that fools, else the highest loss, is kept.
        objective: a name in OBJECTIVES ("ce", "cw", "kl", "feature", ...) or a factory
            ``make(model, x, y, **objective_kwargs)``.
        targeted: minimise the loss toward the classes y instead of maximising it.
        generator: torch.Generator for the random starts (same seed -> bit-identical output).
        early_stop: evaluation mode: keep per sample the first iterate that is misclassified
            (== y when targeted) and drop it from the working batch. Needs y and a classifier
            objective; never weaker than the full loop for accuracy, and cheaper.
        amp_dtype: None, torch.bfloat16 or torch.float16: forward/backward under torch.autocast;
            the step and projection stay in float32.
        objective_kwargs: extra keyword arguments for the objective factory.
        init: optional first iterate, same shape and device as x (projected onto the ball and
            [0, 1] first); replaces the random start. E.g. TRADES starts from x + 0.001 N(0, 1)
            (Zhang et al. 2019). Not with restarts > 1 or early_stop.
    Returns:
        x_adv: a new detached tensor, same shape/dtype/device as x, in [0, 1], within eps of x.
    """
    make, okw, plan, restarts = _validate(model, x, y, eps, step_size, steps, norm, random_start,
                                          restarts, objective, targeted, generator, early_stop,
                                          amp_dtype, objective_kwargs, init)
    if plan.eps == 0.0 or x.shape[0] == 0:
        return x.detach().clone()
    xw = x.detach().to(work_dtype(x.dtype))
    with frozen_eval(model), torch.enable_grad():
        fwd = fed_in_dtype(model, xw)  # float64 images reach a float32 model as float32
        with autocast(x, plan.amp), torch.no_grad():
            obj = make(fwd, xw, y, **okw)  # clean logits/features computed once, here
        if early_stop:
            out = _restarts_early(obj, xw, y, plan, restarts)
        else:
            out = _restarts_full(obj, xw, y, plan, restarts)
    return out.detach().to(x.dtype)


def _validate(model, x, y, eps, step_size, steps, norm, random_start, restarts, objective,
              targeted, generator, early_stop, amp_dtype, objective_kwargs, init=None):
    """pgd's own entry check of its arguments, before any forward pass (the rules of
    :mod:`robustlab.attacks.validate`, shared with the evaluation's settings check)."""
    check_model(model)
    targeted, early_stop = check_bool("targeted", targeted), check_bool("early_stop", early_stop)
    make, okw = check_objective(objective, objective_kwargs, early_stop)
    check_inputs(x, y, y_required=needs_labels(make) or targeted or early_stop,
                 why=_labels_why(make, objective, targeted, early_stop))
    norm = check_norm(norm)
    plan = Plan(eps=check_eps(eps, norm), step_size=check_positive("step_size", step_size),
                steps=check_int("steps", steps, 1), norm=norm,
                random_start=check_bool("random_start", random_start), targeted=targeted,
                amp=runtime.amp_dtype(amp_dtype), generator=check_generator(generator),
                init=_check_init(init, x, restarts, early_stop))
    return make, okw, plan, check_int("restarts", restarts, 1)


def _labels_why(make: Callable, objective: Any, targeted: bool, early_stop: bool) -> str:
    """Why y is required, for the error when it is missing."""
    if needs_labels(make):
        return f" by objective {objective_name(objective)!r}"
    return " for targeted attacks" if targeted else " for early_stop" if early_stop else ""


def _check_init(init: Tensor | None, x: Tensor, restarts: int, early_stop: bool) -> Tensor | None:
    if init is None:
        return None
    if not isinstance(init, Tensor) or not init.is_floating_point():
        raise ConfigError(f"init must be a float tensor shaped like x, got {type(init).__name__}")
    if init.shape != x.shape or init.device != x.device:
        raise InputError(f"init must have x's shape {tuple(x.shape)} and device {x.device}, got "
                         f"{tuple(init.shape)} on {init.device}")
    if restarts != 1 or early_stop:
        raise ConfigError("init gives one fixed start: use it with restarts=1 and no early_stop")
    return init


def _restarts_full(obj: Callable, x: Tensor, y: Tensor | None, plan: Plan,
                   restarts: int) -> Tensor:
    best, bad = run_full(obj, x, plan)
    if restarts > 1:
        best_score = score(obj, best, y, plan)
        for _ in range(restarts - 1):
            cand, bad_r = run_full(obj, x, plan)
            bad = bad | bad_r
            cand_score = score(obj, cand, y, plan)
            better = cand_score > best_score  # ties keep the earlier restart
            best = torch.where(better.view(-1, 1, 1, 1), cand, best)
            best_score = torch.where(better, cand_score, best_score)
    warn_nonfinite(bad)
    return best


def _restarts_early(obj: LogitObjective, x: Tensor, y: Tensor, plan: Plan,
                    restarts: int) -> Tensor:
    """Early-stop evaluation over restarts: later restarts only see the samples not yet fooled."""
    out = x.clone()
    todo = torch.arange(x.shape[0], device=x.device)
    for _ in range(restarts):
        x_r, fooled = run_early(obj.subset(todo), x[todo], y[todo], plan)
        out[todo] = x_r
        todo = todo[~fooled]
        if todo.numel() == 0:
            break
    return out
