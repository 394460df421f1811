"""The traffic-sign report (seed 003) as a recipe: its settings and the steps they expand into.

Steps: four classifiers (standard, FGSM-AT, Fast-FGSM-AT, TRADES; FGSM and Fast-FGSM with the
overfitting guard set to warn, so the collapse the report finds is shown, not prevented); their
clean accuracy (Table I); an FGSM example on the standard model (Fig. 1); the stress tests
(white-box FGSM and PGD against eps, PGD against steps: Figs. 3-5); and ACL (A2S pre-training,
then plain fine-tuning, against the same fine-tuning from scratch: Fig. 6). Table I, the figures,
the catastrophic-overfitting finding and the claims are in :mod:`.traffic_signs_tables`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

from ..errors import ConfigError
from .steps import Step, ref

# key -> (label in tables and curves, training method, the report's clean accuracy, Table I)
MODELS = {"none": ("none", "standard", 96.64), "fgsm": ("FGSM", "fgsm", 97.49),
          "fast-fgsm": ("FastFGSM", "fast-fgsm", 97.7), "trades": ("TRADES", "trades", 80.5)}
SINGLE_STEP = ("fgsm", "fast-fgsm")  # the methods the report finds overfitting catastrophically


@dataclass(frozen=True)
class Settings:
    """Every setting of the recipe; each preset of recipes/traffic-signs.yaml gives all of them.
    eps values are in [0, 1] pixel units (8/255 = 0.0313725...)."""

    dataset: str
    seed: int
    model: str
    width: float
    model_kwargs: dict[str, Any]   # e.g. pretrained (ImageNet weights), mean/std
    augment: Optional[str]         # classifier training (None: the dataset's default)
    val: Union[int, float]         # validation hold-out of the training split
    subset: Optional[int]          # training images (None: all but the validation split)
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    epochs_none: int               # the report: 10 (FGSM, Fast-FGSM), 15 (TRADES)
    epochs_fgsm: int
    epochs_fast_fgsm: int
    epochs_trades: int
    fgsm_eps: float                # FGSM and Fast-FGSM training budget (report: 8/255)
    trades_eps: float              # report: 3/255
    trades_step_size: float
    trades_steps: int
    trades_beta: float
    guard_n: int                   # training images of the catastrophic-overfitting check
    guard_steps: int               # PGD steps of the guards
    guard_val_n: int               # validation images of the robust-validation guard
    pretrain_method: str           # report: a2s
    pretrain_epochs: int           # report: 10
    pretrain_batch_size: int
    pretrain_optimizer: str
    pretrain_lr: float
    pretrain_augment: Optional[str]
    pretrain_eps: float
    pretrain_step_size: float
    pretrain_steps: int
    finetune_epochs: int           # plain fine-tuning of both ACL arms
    n_clean: Optional[int]         # test images of Table I (None: the whole split)
    n: Optional[int]               # test images of the stress tests and Fig. 6
    fig1_n: int                    # images shown in Fig. 1
    stress_eps: tuple[float, ...]  # Figs. 3-4 (must hold fgsm_eps: the overfitting table)
    pgd_steps: int                 # PGD of Figs. 4 and 6 (step eps/4, random start)
    steps_values: tuple[int, ...]  # Fig. 5
    steps_eps: float               # Fig. 5's eps
    acl_eps: tuple[float, ...]     # Fig. 6


def _train_config(s: Settings, method: str, epochs: int, **extra: Any) -> dict:
    guards = {"overfit_n": s.guard_n, "steps": s.guard_steps, "robust_val_n": s.guard_val_n}
    if method in SINGLE_STEP:  # the collapse is the report's finding: mark it, train on
        guards["overfit_action"] = "warn"
    return {"dataset": s.dataset, "model": s.model, "width": s.width,
            "model_kwargs": dict(s.model_kwargs), "augment": s.augment, "val": s.val,
            "subset": s.subset, "batch_size": s.batch_size, "optimizer": s.optimizer,
            "lr": s.lr, "weight_decay": s.weight_decay, "schedule": s.schedule,
            "epochs": epochs, "seed": s.seed, "method": method, "guards": guards, **extra}


def _method_args(s: Settings, key: str) -> dict:
    if key in SINGLE_STEP:
        return {"eps": s.fgsm_eps}
    if key == "trades":
        return {"eps": s.trades_eps, "step_size": s.trades_step_size, "steps": s.trades_steps,
                "beta": s.trades_beta}
    return {}


def model_ref(key: str) -> str:
    """The reference to the trained model file of classifier ``key`` (a key of MODELS)."""
    return ref(f"train-{key}", "model.safetensors")


def baseline_step(s: Settings) -> str:
    """Fig. 6's arm without pre-training: the standard model itself when its training is the
    same fine-tuning (same epochs), else a run of its own."""
    return "train-none" if s.finetune_epochs == s.epochs_none else "acl-baseline"


def arm_labels(s: Settings) -> tuple[str, str]:
    """Fig. 6's two arms as named in the sweep: (with pre-training, without)."""
    return f"{s.pretrain_method.upper()} pre-training + fine-tuning", "no pre-training"


def _check(s: Settings) -> None:
    if not any(math.isclose(e, s.fgsm_eps) for e in s.stress_eps):
        raise ConfigError(f"stress_eps must hold fgsm_eps ({s.fgsm_eps:g}): the overfitting "
                          f"table compares FGSM and PGD at the training budget")
    if not any(e > 0 for e in s.acl_eps):
        raise ConfigError("acl_eps needs at least one eps > 0")


def steps(s: Settings) -> list[Step]:
    """Every step of the recipe at settings ``s``."""
    _check(s)
    out = []
    for key, (label, method, _) in MODELS.items():
        epochs = getattr(s, f"epochs_{key.replace('-', '_')}")
        cfg = _train_config(s, method, epochs, method_args=_method_args(s, key))
        out.append(Step(f"train-{key}", "train", {"config": cfg},
                        f"{label} ({method}) classifier, {epochs} epochs"))
        out.append(Step(f"clean-{key}", "evaluate", {
            "model": model_ref(key), "dataset": s.dataset, "split": "test", "n": s.n_clean,
            "attacks": [], "seed": s.seed}, f"Table I: clean accuracy of {label}"))
    out.append(Step("fig1-fgsm-example", "evaluate", {
        "model": model_ref("none"), "dataset": s.dataset, "split": "test", "n": s.fig1_n,
        "attacks": [{"name": "fgsm", "label": "fgsm", "eps": s.fgsm_eps, "threat": "white-box"}],
        "seed": s.seed, "save_adv": True}, "Fig. 1: FGSM examples on the standard model"))
    models = {label: model_ref(key) for key, (label, _, _) in MODELS.items()}
    common = {"models": models, "dataset": s.dataset, "split": "test", "n": s.n,
              "seed": s.seed, "threat": "white-box"}
    pgd = {"steps": s.pgd_steps, "early_stop": True}
    out += [
        Step("stress-fgsm-eps", "sweep", {**common, "attacks": ["fgsm"], "param": "eps",
             "values": list(s.stress_eps), "settings": {}, "title": "FGSM against eps"},
             "Fig. 3: FGSM accuracy against eps"),
        Step("stress-pgd-eps", "sweep", {**common, "attacks": ["pgd"], "param": "eps",
             "values": list(s.stress_eps), "settings": pgd,
             "title": f"PGD-{s.pgd_steps} against eps"}, "Fig. 4: PGD accuracy against eps"),
        Step("stress-pgd-steps", "sweep", {**common, "attacks": ["pgd"], "param": "steps",
             "values": list(s.steps_values), "settings": {"eps": s.steps_eps,
                                                           "early_stop": True},
             "title": "PGD against steps"}, "Fig. 5: PGD accuracy against steps")]
    return out + _acl_steps(s, common, pgd)


def _acl_steps(s: Settings, common: dict, pgd: dict) -> list[Step]:
    """Fig. 6: pre-training + fine-tuning against the same fine-tuning from scratch. Both arms
    share dataset, model, width, model_kwargs, subset, val and seed (as compare-pretraining
    requires), and pre-training holds out the same validation images."""
    pre = {"dataset": s.dataset, "model": s.model, "width": s.width,
           "model_kwargs": dict(s.model_kwargs), "subset": s.subset, "val": s.val,
           "seed": s.seed, "method": s.pretrain_method, "epochs": s.pretrain_epochs,
           "batch_size": s.pretrain_batch_size, "optimizer": s.pretrain_optimizer,
           "lr": s.pretrain_lr, "augment": s.pretrain_augment, "eps": s.pretrain_eps,
           "step_size": s.pretrain_step_size, "steps": s.pretrain_steps}
    fine = _train_config(s, "standard", s.finetune_epochs)
    out = [Step("acl-pretrain", "pretrain", {"config": pre},
                f"{s.pretrain_method} contrastive pre-training (labels never read)"),
           Step("acl-finetune", "train", {"config": {
               **fine, "init": ref("acl-pretrain", "encoder.safetensors")}},
               "plain fine-tuning from the pre-trained encoder")]
    if baseline_step(s) == "acl-baseline":
        out.append(Step("acl-baseline", "train", {"config": fine},
                        "the same fine-tuning from scratch"))
    with_pre, without = arm_labels(s)
    out.append(Step("acl-pgd-eps", "sweep", {
        **common, "models": {with_pre: ref("acl-finetune", "model.safetensors"),
                             without: ref(baseline_step(s), "model.safetensors")},
        "attacks": ["pgd"], "param": "eps", "values": list(s.acl_eps), "settings": pgd,
        "title": f"PGD-{s.pgd_steps}: pre-training or not"}, "Fig. 6: PGD accuracy against eps"))
    return out
