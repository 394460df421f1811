"""AutoAttack (Croce & Hein 2020) through its reference implementation, package ``pyautoattack``.

Lazily imported (an optional extra: ``pip install robustlab[autoattack]``). The adapter fits it to
robustlab's contracts: seeded without disturbing the caller's global RNG, model in eval mode with
frozen parameters (restored afterwards), output projected onto the ball and [0, 1].

Few classes. The standard version targets the 9 runner-up classes; with K classes robustlab uses
n_target_classes = K - 1 for APGD-T and FAB-T. The DLR losses need enough logits: untargeted DLR
(APGD-DLR) needs K >= 3 and the targeted DLR of APGD-T needs K >= 4. So with K == 3 APGD-T is
replaced by APGD-DLR, and with K == 2 both DLR attacks are replaced by APGD-CE, with a warning.
FAB-T and Square work for any K >= 2. Square's l2 version needs images of side >= 5; on smaller
images it is skipped with a warning.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from typing import Callable, Sequence

import torch
from torch import Tensor

from .._checks import check_int
from ..errors import ConfigError, InputError, RobustlabError
from .geometry import check_eps, check_norm, project, work_dtype
from .mode import frozen_eval
from .validate import check_inputs, check_model

VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
_AA_NORM = {"linf": "Linf", "l2": "L2"}


class MissingDependency(RobustlabError, ImportError):
    """An optional package is not installed; the message says how to install it."""


def autoattack(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, *, eps: float,
               norm: str = "linf", version: str = "standard", seed: int = 0,
               attacks: Sequence[str] | None = None, n_iter: int | None = None,
               n_queries: int | None = None) -> Tensor:
    """AutoAttack (APGD-CE, APGD-T, FAB-T, Square; Croce & Hein, ICML 2020) on a classifier.

    Args:
        model: classifier on [0, 1] images. x: (B, C, H, W) in [0, 1]. y: (B,) labels.
        eps: budget. norm: "linf" or "l2". version: "standard", "plus", "rand" or "custom".
        seed: seeds AutoAttack's random starts (the global RNG state is restored afterwards).
        attacks: for version="custom", a subset of apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square.
        n_iter: override the APGD/FAB iterations (100). n_queries: override Square's (5000).
    Returns:
        x_adv: same shape/dtype/device as x, in [0, 1], within eps of x; a sample no attack
        fooled is returned unchanged.
    Raises:
        MissingDependency: pyautoattack is not installed.
    """
    check_model(model)
    check_inputs(x, y, y_required=True, why=" by AutoAttack")
    norm = check_norm(norm)
    eps = check_eps(eps, norm)
    todo = _check_settings(version, seed, attacks, n_iter, n_queries)
    aa = _import()
    if eps == 0.0 or x.shape[0] == 0:
        return x.detach().clone()
    xw = x.detach().to(work_dtype(x.dtype))
    tracer = sys.gettrace()  # its dynamic-defence check calls sys.settrace(None); keep coverage
    try:
        x_adv = _run(aa, model, xw, y, eps, norm, version, seed, todo, n_iter, n_queries)
    finally:
        sys.settrace(tracer)
    return project(x_adv.detach(), xw, eps, norm).to(x.dtype)


def _run(aa, model, xw, y, eps, norm, version, seed, todo, n_iter, n_queries) -> Tensor:
    """Run AutoAttack with the model frozen in eval mode and the global RNG state forked."""
    devices = [xw.device.index if xw.device.index is not None else torch.cuda.current_device()] \
        if xw.device.type == "cuda" else []
    with frozen_eval(model), torch.random.fork_rng(devices=devices):
        with torch.no_grad():
            k = model(xw).shape[-1]
        _check_classes(y, k)
        adversary = aa.AutoAttack(model, attacks=list(todo) if version == "custom" else None,
                                  device=xw.device, eps=eps, norm=_AA_NORM[norm], seed=seed,
                                  version=version)
        _fit(adversary, k, n_iter, n_queries)
        _drop_square_if_too_small(adversary, norm, min(xw.shape[-2:]))
        x_adv, _ = adversary.run_standard_evaluation(xw, y, batch_size=xw.shape[0])
    return x_adv


def _import():
    try:
        return importlib.import_module("pyautoattack")
    except ImportError:
        raise MissingDependency("AutoAttack needs the optional package pyautoattack: "
                                "pip install robustlab[autoattack]") from None


def _check_settings(version, seed, attacks, n_iter, n_queries) -> tuple[str, ...]:
    if version not in VERSIONS:
        raise ConfigError(f"unknown AutoAttack version {version!r}; known: {', '.join(VERSIONS)}")
    check_int("seed", seed, 0)
    for name, v in (("n_iter", n_iter), ("n_queries", n_queries)):
        if v is not None:
            check_int(name, v, 1)
    if version != "custom":
        if attacks is not None:
            raise ConfigError("attacks= is only used with version='custom'")
        return ()
    if not attacks or isinstance(attacks, str):
        raise ConfigError(f"version='custom' needs attacks=[...] from {', '.join(AA_ATTACKS)}")
    unknown = [a for a in attacks if a not in AA_ATTACKS]
    if unknown:
        raise ConfigError(f"unknown AutoAttack attacks {unknown}; known: {', '.join(AA_ATTACKS)}")
    return tuple(attacks)


def _check_classes(y: Tensor, k: int) -> None:
    if k < 2:
        raise InputError(f"AutoAttack needs a classifier with >= 2 classes, the model outputs {k}")
    if int(y.max()) >= k:
        raise InputError(f"labels must lie in [0, {k - 1}] (the model outputs {k} logits), "
                         f"got a label {int(y.max())}")


def _fit(adversary, k: int, n_iter: int | None, n_queries: int | None) -> None:
    """Adapt the attack list and target counts to k classes; apply iteration overrides."""
    n_targets = min(9, k - 1)
    adversary.apgd_targeted.n_target_classes = n_targets
    adversary.fab.n_target_classes = n_targets
    swap = {"apgd-t": "apgd-dlr", "apgd-dlr": "apgd-dlr"} if k == 3 else \
        {"apgd-t": "apgd-ce", "apgd-dlr": "apgd-ce"} if k == 2 else {}
    todo = []
    for a in adversary.attacks_to_run:
        b = swap.get(a, a)
        if b != a:
            warnings.warn(f"AutoAttack: {a} needs more classes than the model's {k} (the DLR loss "
                          f"needs >= {4 if a == 'apgd-t' else 3}); running {b} instead",
                          RuntimeWarning, stacklevel=3)
        if b not in todo:
            todo.append(b)
    adversary.attacks_to_run = todo
    if n_iter is not None:
        for att in (adversary.apgd, adversary.apgd_targeted, adversary.fab):
            att.n_iter = n_iter
        for att in (adversary.apgd, adversary.apgd_targeted):
            att.n_iter_2, att.n_iter_min = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1)
            att.size_decr, att.n_iter_orig = max(int(0.03 * n_iter), 1), n_iter
    if n_queries is not None:
        adversary.square.n_queries = n_queries


def _drop_square_if_too_small(adversary, norm: str, side: int) -> None:
    if norm == "l2" and side < 5 and "square" in adversary.attacks_to_run:
        warnings.warn(f"AutoAttack: Square (l2) needs images of side >= 5, got {side}; skipping it",
                      RuntimeWarning, stacklevel=3)
        adversary.attacks_to_run = [a for a in adversary.attacks_to_run if a != "square"]
