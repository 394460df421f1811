"""Attacks: threat geometry, one PGD engine with pluggable objectives, named attacks, AutoAttack.

    from robustlab.attacks import pgd, fgsm, run_attack, ATTACKS, OBJECTIVES
    x_adv = pgd(model, x, y, eps=8/255, step_size=2/255, steps=10)
    x_adv = run_attack("pgd", model, x, y, eps=8/255, steps=20, seed=0)

All attacks take (B, C, H, W) images in [0, 1], never modify their inputs, run the model in eval
mode with frozen parameters (restoring both afterwards) and return a new tensor inside the eps-ball
and [0, 1]. See DESIGN.md ("One attack engine, many objectives").
"""
from .autoattack_adapter import MissingDependency, autoattack
from .catalog import ATTACKS, AttackEntry, attack_settings, describe, register_attack, run_attack
from .engine import pgd
from .distortion import feature_distortion
from .one_step import fast_fgsm, fgsm
from ..defaults import DEFAULT_STEP
from .geometry import NORMS, ThreatModel, ascent_step, project, random_start
from .mode import frozen_eval
from .objectives import OBJECTIVES, LogitObjective, register_objective
from . import builtin as _builtin  # noqa: F401  (registers the named attacks)
from .builtin import effective_settings

__all__ = [
    "ATTACKS", "DEFAULT_STEP", "NORMS", "OBJECTIVES", "AttackEntry", "LogitObjective",
    "MissingDependency", "effective_settings",
    "ThreatModel", "ascent_step", "attack_settings", "autoattack", "describe", "fast_fgsm",
    "feature_distortion", "fgsm", "frozen_eval", "pgd", "project", "random_start",
    "register_attack", "register_objective", "run_attack",
]
