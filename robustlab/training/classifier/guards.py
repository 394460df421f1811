"""After-epoch guards of adversarial training: catastrophic and robust overfitting.

Both are trainer hooks ``hook(run, epoch, metrics) -> "restore" | "stop" | None`` built from
``TrainConfig.guards`` (see :class:`~robustlab.training.classifier.config.GuardConfig`):

- :class:`OverfitGuard` (Wong et al. 2020, "Fast is better than free"): PGD on a fixed training
  batch after each epoch; when its accuracy falls by more than ``overfit_drop`` from the previous
  epoch the epoch is marked ``catastrophic_overfitting`` in metrics.jsonl, a warning is issued and
  (by default) the hook asks the trainer to restore the previous epoch's weights and stop.
- :class:`RobustValidation` (Rice et al. 2020, "Overfitting in adversarially robust deep
  learning"): PGD accuracy on the held-out validation split each epoch; the best epoch's weights
  are kept as ``best.safetensors``.

Their state (previous accuracy, best epoch) lives in ``run.meta``, which the trainer saves with
every epoch's state, so a resumed run guards exactly like an uninterrupted one. Their PGD draws
its random start from a generator with a fixed seed, never from the global RNG or the epoch's.
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import torch

from ... import models as rl_models
from ...attacks import fgsm, pgd
from ...defaults import default_step
from ...distributed import world
from ...errors import ConfigError
from ...metrics import Attack, robust_accuracy
from .config import TrainConfig

log = logging.getLogger(__name__)
DEFAULT_EPS = 8 / 255


def guard_attack(kind: str, *, eps: float, steps: int, seed: int) -> Attack:
    """The guards' ``attack(model, x, y) -> x_adv``, scored by ``metrics.robust_accuracy``.

    Early-stop linf PGD (random start from a generator seeded with ``seed``, advancing batch after
    batch; each sample keeps its first fooling iterate: never weaker, cheaper), or FGSM with
    ``kind="fgsm"`` (``steps`` and ``seed`` then unused).
    """
    if kind not in ("pgd", "fgsm"):
        raise ConfigError(f"the guards run pgd or fgsm, got {kind!r}")
    if kind == "fgsm":
        return lambda model, x, y: fgsm(model, x, y, eps=eps)
    gen = torch.Generator().manual_seed(seed)
    return lambda model, x, y: pgd(model, x, y, eps=eps, step_size=default_step("pgd", eps),
                                   steps=steps, generator=gen, early_stop=True)


def guard_eps(cfg: TrainConfig, method: Any) -> float:
    """The guards' budget: guards.eps, else the method's eps, else 8/255."""
    if cfg.guards.eps is not None:
        return cfg.guards.eps
    return float(getattr(getattr(method, "args", None), "eps", DEFAULT_EPS))


class OverfitGuard:
    """Catastrophic-overfitting detection on a fixed training batch (Wong et al. 2020)."""

    def __init__(self, cfg: TrainConfig, eps: float, seed: int) -> None:
        self.g, self.eps, self.seed = cfg.guards, eps, seed

    def measure(self, run: Any, attack: str = "pgd") -> float:
        batch = run.train_data.select(list(range(min(self.g.overfit_n, len(run.train_data)))))
        return robust_accuracy(run.model, batch, guard_attack(attack, eps=self.eps,
                               steps=self.g.steps, seed=self.seed), device=run.device)

    def measure_fgsm(self, run: Any) -> float:
        """FGSM accuracy on the same batch: far above the PGD accuracy is the other signature of
        catastrophic overfitting (Kim et al. 2020), one that shows even within the first epoch."""
        return self.measure(run, attack="fgsm")

    def __call__(self, run: Any, epoch: int, metrics: dict[str, Any]) -> str | None:
        acc = self.measure(run)
        fgsm_acc = self.measure_fgsm(run)
        metrics["overfit_pgd_acc"] = acc
        metrics["overfit_fgsm_acc"] = fgsm_acc
        prev = run.meta.get("overfit_pgd_acc")
        fell = prev is not None and prev - acc > self.g.overfit_drop
        gap = fgsm_acc - acc > self.g.overfit_gap
        if not (fell or gap):
            run.meta["overfit_pgd_acc"] = acc
            return None
        metrics["catastrophic_overfitting"] = True
        restore = self.g.overfit_action == "restore"
        why = (f"PGD accuracy on a fixed training batch fell from {prev:.3f} to {acc:.3f} (more "
               f"than {self.g.overfit_drop:g})" if fell else
               f"FGSM accuracy {fgsm_acc:.3f} exceeds PGD accuracy {acc:.3f} on a fixed training "
               f"batch by more than {self.g.overfit_gap:g}")
        warnings.warn(
            f"catastrophic overfitting in epoch {epoch + 1}: {why}; "
            + (f"restoring the weights of epoch {epoch} and stopping" if restore else
               "training goes on (guards.overfit_action=warn)"), RuntimeWarning, stacklevel=2)
        if restore:
            return "restore"  # run.meta keeps the previous epoch's accuracy, like the weights
        run.meta["overfit_pgd_acc"] = acc
        return None


class RobustValidation:
    """Robust validation accuracy each epoch; the best epoch is saved as ``best.safetensors``."""

    def __init__(self, cfg: TrainConfig, eps: float, seed: int) -> None:
        self.g, self.eps, self.seed = cfg.guards, eps, seed

    def __call__(self, run: Any, epoch: int, metrics: dict[str, Any]) -> str | None:
        val = run.val_data.select(list(range(min(self.g.robust_val_n, len(run.val_data)))))
        acc = robust_accuracy(run.model, val, guard_attack("pgd", eps=self.eps,
                              steps=self.g.steps, seed=self.seed), device=run.device)
        metrics["val_robust_acc"] = acc
        if acc > run.meta.get("best_val_robust_acc", -1.0):
            run.meta.update(best_val_robust_acc=acc, best_epoch=epoch + 1)
            if world().main:  # under torchrun only rank 0 writes
                rl_models.save(run.model, run.out.path / "best.safetensors",
                               dataset=run.config.dataset, config=run.out.config_dict,
                               metrics={"epoch": epoch + 1, **metrics})
        metrics["best_epoch"] = run.meta["best_epoch"]
        return None


def build_guards(cfg: TrainConfig, method: Any, has_val: bool, seed: int) -> list:
    """The guards ``cfg.guards`` switches on (None: on for every method but standard)."""
    def wanted(flag: bool | None) -> bool:
        return cfg.method != "standard" if flag is None else flag

    eps = guard_eps(cfg, method)
    hooks: list = []
    if wanted(cfg.guards.overfit_check):
        hooks.append(OverfitGuard(cfg, eps, seed))
    want_val = wanted(cfg.guards.robust_val)
    if want_val and not has_val:
        if cfg.guards.robust_val:
            warnings.warn("guards.robust_val needs a validation split (val > 0); skipping it",
                          RuntimeWarning, stacklevel=2)
    elif want_val:
        hooks.append(RobustValidation(cfg, eps, seed))
    return [_timed(h) for h in hooks]


def _timed(hook):
    """Add the hook's wall time to metrics["guard_seconds"] (kept apart from "seconds")."""
    def run_hook(run, epoch, metrics):
        t0 = time.perf_counter()
        try:
            return hook(run, epoch, metrics)
        finally:
            metrics["guard_seconds"] = round(metrics.get("guard_seconds", 0.0)
                                             + time.perf_counter() - t0, 3)
    run_hook.guard = hook
    return run_hook
