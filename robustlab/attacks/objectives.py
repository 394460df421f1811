"""Objectives the PGD engine maximises, by name.

An objective is a registered factory ``make(model, x, y, **kw) -> loss_fn`` where
``loss_fn(x_adv) -> (B,)`` per-sample losses. The factory precomputes once what it needs (clean
logits for "kl", clean features for "feature"); the engine then calls ``loss_fn`` once per step.

Classifier objectives return a :class:`LogitObjective`, which also exposes the logits so the engine
can read predictions (early stop, picking the restart that fools). A third party registers more::

    @register_objective("nt-xent", needs_labels=False, help="contrastive loss (ACL)")
    def make_nt_xent(model, x, y, *, x_pair, temperature=0.5): ...
    pgd(model, x, None, ..., objective="nt-xent", objective_kwargs={"x_pair": x2})

(a plain ``OBJECTIVES.register(name)`` works too; such objectives count as label-free).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..registry import Registry
from .geometry import work_dtype

Objective = Callable[[Tensor], Tensor]
OBJECTIVES: Registry = Registry("objective")


def register_objective(name: str, *, needs_labels: bool, on_logits: bool = False,
                       help: str = "") -> Callable:
    """Register an objective factory under ``name``.

    Args:
        needs_labels: the factory needs class labels y (the engine refuses y=None up front).
        on_logits: the factory returns a :class:`LogitObjective` (so early_stop can use it).
    """
    def deco(make: Callable) -> Callable:
        make.needs_labels = needs_labels
        make.on_logits = on_logits
        return OBJECTIVES.register(name, help=help)(make)
    return deco


def needs_labels(make: Callable) -> bool:
    """Whether an objective factory needs class labels (False for unmarked third-party ones)."""
    return bool(getattr(make, "needs_labels", False))


def on_logits(make: Callable) -> bool:
    """Whether an objective factory returns a :class:`LogitObjective` (a classifier objective)."""
    return bool(getattr(make, "on_logits", False))


class LogitObjective:
    """A per-sample loss computed from a classifier's logits.

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, K) logits.
        loss_fn: ``loss_fn(logits (B, K) float32, y (B,) or None, **state) -> (B,)``.
        y: labels (B,) or None for label-free losses.
        state: per-sample tensors (first dimension B) precomputed on the clean batch.
    """

    def __init__(self, model: Callable, loss_fn: Callable, y: Tensor | None,
                 _checked: bool = False, **state: Tensor) -> None:
        self.model, self.loss_fn, self.y, self.state = model, loss_fn, y, state
        self._checked = _checked or y is None

    def from_logits(self, logits: Tensor) -> Tensor:
        """(B, K) logits -> (B,) losses (in float32 or wider, also under autocast)."""
        if not self._checked:  # labels vs. the model's number of classes, once (one sync)
            _check_label_range(self.y, logits.shape[-1])
            self._checked = True
        return self.loss_fn(logits.to(work_dtype(logits.dtype)), self.y, **self.state)

    def __call__(self, x_adv: Tensor) -> Tensor:
        return self.from_logits(self.model(x_adv))

    def subset(self, idx: Tensor) -> "LogitObjective":
        """The same objective restricted to the samples ``idx`` of the batch."""
        y = None if self.y is None else self.y[idx]
        state = {k: v[idx] for k, v in self.state.items()}
        return LogitObjective(self.model, self.loss_fn, y, _checked=self._checked, **state)


def _check_label_range(y: Tensor, num_classes: int) -> None:
    if y.numel() and int(y.max()) >= num_classes:
        raise InputError(f"labels must lie in [0, {num_classes - 1}] (the model outputs "
                         f"{num_classes} logits), got a label {int(y.max())}")


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _cw(logits: Tensor, y: Tensor) -> Tensor:
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - true


def _kl(logits: Tensor, y: Tensor | None, *, clean_logp: Tensor) -> Tensor:
    adv_logp = F.log_softmax(logits, dim=1)
    return F.kl_div(adv_logp, clean_logp, reduction="none", log_target=True).sum(dim=1)


@register_objective("ce", needs_labels=True, on_logits=True,
                    help="cross-entropy of the logits (FGSM, PGD)")
def make_ce(model: Callable, x: Tensor, y: Tensor) -> LogitObjective:
    """Cross-entropy loss per sample (Goodfellow et al. 2015; Madry et al. 2018)."""
    return LogitObjective(model, _ce, y)


@register_objective("cw", needs_labels=True, on_logits=True,
                    help="CW margin: max other logit - true logit (Carlini & Wagner 2017)")
def make_cw(model: Callable, x: Tensor, y: Tensor) -> LogitObjective:
    """Carlini-Wagner margin on logits, per sample: max_{j != y} z_j - z_y (no clamp)."""
    return LogitObjective(model, _cw, y)


@register_objective("kl", needs_labels=False, on_logits=True,
                    help="TRADES: KL(softmax f(x) || softmax f(x')), label-free (Zhang+ 2019)")
def make_kl(model: Callable, x: Tensor, y: Tensor | None = None) -> LogitObjective:
    """TRADES inner maximisation: KL(p(x) || p(x')) per sample, summed over classes.

    The clean prediction p(x) is computed once here, without gradient (detached).
    """
    with torch.no_grad():
        clean = model(x)
    clean_logp = F.log_softmax(clean.to(work_dtype(clean.dtype)), dim=1)
    return LogitObjective(model, _kl, y, clean_logp=clean_logp)


@register_objective("feature", needs_labels=False,
                    help="feature distortion ||P(x') - P(x)||_2 of an extractor (SSR Alg. 1)")
def make_feature(model: Callable, x: Tensor, y: Tensor | None = None) -> Objective:
    """Feature distortion of seed 000 (Alg. 1): the l2 distance between the extractor's features
    of x' and of x, per sample. ``model`` is the frozen feature extractor P; labels are unused."""
    with torch.no_grad():
        clean = model(x)
    clean = clean.to(work_dtype(clean.dtype)).flatten(1)

    def loss(x_adv: Tensor) -> Tensor:
        feats = model(x_adv)
        diff = feats.to(clean.dtype).flatten(1) - clean
        return torch.linalg.vector_norm(diff, ord=2, dim=1)

    return loss


def objective_kwargs_error(make: Callable, kwargs: dict[str, Any]) -> str | None:
    """A message if ``make`` cannot take ``kwargs`` (checked before any forward pass), else None."""
    try:
        params = inspect.signature(make).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    accepted = [n for n, p in list(params.items())[3:]
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        return (f"objective_kwargs {unknown} are not accepted by this objective; "
                f"it accepts: {', '.join(accepted) or 'none'}")
    return None
