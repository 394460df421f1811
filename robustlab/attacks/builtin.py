"""The built-in named attacks and their settings: fgsm, fast-fgsm, pgd, feature-distortion,
autoattack. Defaults follow REFERENCE.md (PGD: 10 steps, random start; feature distortion: eps
16/255, 20 steps); every default step comes from ``geometry.DEFAULT_STEP``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .autoattack_adapter import autoattack
from .catalog import generator_for, opt, register_attack
from .engine import pgd
from ..defaults import DEFAULT_STEP, default_step, step_text
from .distortion import feature_distortion
from .one_step import fast_fgsm, fgsm

_EPS = "budget in [0, 1] pixel units"
_SEED = "seed of the random start (or pass generator)"
_GEN = "torch.Generator for the random start (Python API only)"
_AMP = "autocast dtype: none, bf16, fp16"


def _step_help(attack: str) -> str:
    return f"step; default {step_text(attack)}"


@dataclass(frozen=True)
class FGSMSettings:
    eps: float = opt(8 / 255, _EPS)
    norm: str = opt("linf", "linf or l2")
    objective: str = opt("ce", "objective name (ce, cw, ...)")
    targeted: bool = opt(False, "minimise the loss toward the classes y")
    amp_dtype: Any = opt(None, _AMP)


@dataclass(frozen=True)
class FastFGSMSettings:
    eps: float = opt(8 / 255, _EPS)
    step_size: Optional[float] = opt(None, _step_help("fast-fgsm"))
    norm: str = opt("linf", "linf or l2")
    objective: str = opt("ce", "objective name")
    targeted: bool = opt(False, "minimise the loss toward the classes y")
    amp_dtype: Any = opt(None, _AMP)
    seed: Optional[int] = opt(None, _SEED)
    generator: Optional[torch.Generator] = opt(None, _GEN)


@dataclass(frozen=True)
class PGDSettings:
    eps: float = opt(8 / 255, _EPS)
    step_size: Optional[float] = opt(None, _step_help("pgd"))
    steps: int = opt(10, "number of iterations")
    norm: str = opt("linf", "linf or l2")
    random_start: bool = opt(True, "uniform random start in the ball")
    restarts: int = opt(1, "random restarts (keep the one that fools / highest loss)")
    objective: str = opt("ce", "objective name (ce, cw, kl, ...)")
    targeted: bool = opt(False, "minimise the loss toward the classes y")
    early_stop: bool = opt(False, "keep the first fooling iterate; cheaper, never weaker")
    amp_dtype: Any = opt(None, _AMP)
    objective_kwargs: Optional[dict] = opt(None, "extra arguments of the objective")
    seed: Optional[int] = opt(None, _SEED)
    generator: Optional[torch.Generator] = opt(None, _GEN)


@dataclass(frozen=True)
class FeatureDistortionSettings:
    eps: float = opt(16 / 255, _EPS)
    step_size: Optional[float] = opt(None, _step_help("feature-distortion"))
    steps: int = opt(20, "number of iterations")
    random_start: bool = opt(True, "uniform random start in the ball")
    norm: str = opt("linf", "linf or l2")
    amp_dtype: Any = opt(None, _AMP)
    seed: Optional[int] = opt(None, _SEED)
    generator: Optional[torch.Generator] = opt(None, _GEN)


@dataclass(frozen=True)
class AutoAttackSettings:
    eps: float = opt(8 / 255, _EPS)
    norm: str = opt("linf", "linf or l2")
    version: str = opt("standard", "standard, plus, rand or custom")
    seed: int = opt(0, "seed of AutoAttack's random starts")
    attacks: Optional[tuple] = opt(None, "for version=custom: apgd-ce, apgd-t, fab-t, square, ...")
    n_iter: Optional[int] = opt(None, "override APGD/FAB iterations (default 100)")
    n_queries: Optional[int] = opt(None, "override Square queries (default 5000)")


@register_attack("fgsm", FGSMSettings, help=f"FGSM: one signed-gradient step of size "
                 f"{step_text('fgsm')} (Goodfellow et al. 2015)")
def _fgsm(model, x, y, **s):
    return fgsm(model, x, y, **s)


@register_attack("fast-fgsm", FastFGSMSettings, help=f"Fast-FGSM / FGSM-RS: random start, one "
                 f"step of {step_text('fast-fgsm')} (Wong et al. 2020)")
def _fast_fgsm(model, x, y, *, seed, generator, **s):
    return fast_fgsm(model, x, y, generator=generator_for(x, seed, generator), **s)


@register_attack("pgd", PGDSettings, help=f"PGD with random start, step {step_text('pgd')} "
                 "(Madry et al. 2018)")
def _pgd(model, x, y, *, step_size, seed, generator, **s):
    step = step_size if step_size is not None else _default_step(s["eps"])
    return pgd(model, x, y, step_size=step, generator=generator_for(x, seed, generator), **s)


@register_attack("feature-distortion", FeatureDistortionSettings, needs_labels=False,
                 model_role="extractor", help="label-free feature distortion of an extractor, "
                 f"step {step_text('feature-distortion')} (SSR purifier paper, Alg. 1)")
def _feature_distortion(extractor, x, y=None, *, seed, generator, **s):
    return feature_distortion(extractor, x, generator=generator_for(x, seed, generator), **s)


@register_attack("autoattack", AutoAttackSettings, help="AutoAttack via pyautoattack "
                 "(Croce & Hein 2020); optional extra")
def _autoattack(model, x, y, **s):
    return autoattack(model, x, y, **s)


def _default_step(eps: Any) -> Any:
    """pgd's default step at ``eps`` (1.0 at eps 0, where pgd returns x but a step must still be
    valid), or eps itself when it is not a number (pgd then reports it clearly)."""
    try:
        return default_step("pgd", eps) or 1.0
    except (TypeError, ValueError):
        return eps


def effective_settings(name: str, **settings: Any) -> dict:
    """Every setting of attack ``name`` as it will run: defaults filled in, including the step size
    a None step_size stands for. For results files (the full attack config, STYLE rule 12)."""
    import dataclasses

    from .catalog import attack_settings

    out = dataclasses.asdict(attack_settings(name, **settings))
    if name in DEFAULT_STEP and out.get("step_size") is None and isinstance(out.get("eps"), float):
        out["step_size"] = default_step(name, out["eps"])
    return out
