"""Checks against gradient masking and other ways an evaluation can look robust and be broken.

Each check returns a list of warning dicts {"check", "message", ...} that go into the results
(Athalye et al. 2018; Tramer et al. 2020). A warning is a reason to distrust a number, not a result.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .. import attacks as rl_attacks

# The large-eps check's own PGD setting, not an attack default: a step of eps/8 (a fraction of
# eps) for 20 steps, kept as it is when pgd's default step (attacks.DEFAULT_STEP) changes.
LARGE_EPS_STEP = 1 / 8
LARGE_EPS_STEPS = 20


def _warn(check: str, message: str, **extra) -> dict:
    return {"check": check, "message": message, **extra}


def output_warnings(logits: torch.Tensor) -> list[dict]:
    """The model should output logits; rows that are probabilities make cross-entropy attacks weak."""
    probs_like = bool(((logits >= 0) & (logits <= 1)).all()) and bool(
        torch.allclose(logits.float().sum(1), torch.ones(len(logits), device=logits.device), atol=1e-3))
    if probs_like:
        return [_warn("outputs-probabilities", "the model's outputs are in [0, 1] and sum to 1: it "
                      "returns probabilities, not logits; remove the final softmax, or attacks on "
                      "cross-entropy are weakened (gradient masking)")]
    return []


def gradient_warnings(model, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Zero or non-finite input gradients of the cross-entropy on a clean batch."""
    with rl_attacks.frozen_eval(model):
        xg = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(xg).float(), y, reduction="sum")
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss, xg)
        else:  # no path from the input to the loss at all
            grad = torch.zeros_like(xg)
    out = []
    if not torch.isfinite(grad).all():
        out.append(_warn("nonfinite-gradient", "the input gradient has NaN or infinite values: "
                         "gradient-based attacks are meaningless here; use a gradient-free attack "
                         "(autoattack's square) or BPDA"))
    zero = (grad.flatten(1).abs().amax(1) == 0).float().mean().item()
    if zero > 0.05:
        out.append(_warn("zero-gradient", f"{zero:.0%} of the samples have an all-zero input "
                         "gradient: the model may mask gradients (saturated softmax, a "
                         "non-differentiable step); try BPDA, cw, or autoattack", fraction=zero))
    return out


def large_eps_warnings(model, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> list[dict]:
    """At a very large eps every classifier should be broken; if not, gradients are suspect."""
    x_adv = rl_attacks.run_attack("pgd", model, x, y, eps=eps, step_size=eps * LARGE_EPS_STEP,
                                  steps=LARGE_EPS_STEPS, seed=seed)
    with torch.no_grad():
        acc = (model(x_adv).argmax(1) == y).float().mean().item()
    if acc > 0.1:
        return [_warn("not-near-zero-at-large-eps", f"PGD-{LARGE_EPS_STEPS} at eps {eps:g} "
                      f"leaves {acc:.1%} accuracy; an unbounded attack should reach ~0%: suspect "
                      "gradient masking",
                      eps=eps, acc=acc)]
    return []


def threat_warnings(specs: Sequence, acc: dict[str, float], n: int) -> list[dict]:
    """An attack under another threat model beating the same attack white-box means the white-box
    gradients are poor (transfer stronger than white-box is the classic symptom)."""
    tol = max(0.005, 1.0 / max(n, 1))

    def same_attack(s) -> tuple:  # settings may hold lists (e.g. autoattack's attacks): key by repr
        return s.name, tuple(sorted((k, repr(v)) for k, v in s.settings.items()))

    white = {same_attack(s): s.key for s in specs if s.threat == "white-box"}
    out = []
    for s in specs:
        key = same_attack(s)
        if s.threat != "white-box" and key in white and acc[s.key] < acc[white[key]] - tol:
            out.append(_warn(f"{s.threat}-stronger-than-white-box",
                             f"{s.key} ({acc[s.key]:.1%}) is stronger than the same attack white-box "
                             f"({acc[white[key]]:.1%}): white-box gradients are unreliable here, so "
                             "report the stronger number", attack=s.key))
    return out


def monotonic_warnings(rows: Sequence[dict], tol: float = 0.02) -> list[dict]:
    """In a sweep, accuracy should not rise with eps or steps (beyond noise ``tol``)."""
    out = []
    by_model: dict[tuple, list[dict]] = {}
    for r in rows:
        by_model.setdefault((r["model"], r["attack"], r["threat"], r["param"]), []).append(r)
    for (model, attack, threat, param), rs in by_model.items():
        rs = sorted(rs, key=lambda r: r["value"])
        for a, b in zip(rs, rs[1:]):
            if b["acc"] > a["acc"] + tol:
                out.append(_warn(f"accuracy-rises-with-{param}",
                                 f"{model} under {attack}@{threat}: accuracy rises from "
                                 f"{a['acc']:.1%} at {param}={a['value']} to {b['acc']:.1%} at "
                                 f"{param}={b['value']}; a stronger attack must not help the "
                                 "defender: suspect gradient masking or too few steps",
                                 model=model, attack=attack))
    return out
