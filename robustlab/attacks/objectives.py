"""Objectives the PGD engine maximises, by name.

An objective is a registered factory ``make(model, x, y, **kw) -> loss_fn`` where
``loss_fn(x_adv) -> (B,)`` per-sample losses. The factory precomputes once what it needs (clean
logits for "kl", clean features for "feature"); the engine then calls ``loss_fn`` once per step.

Classifier objectives return a :class:`LogitObjective`, which also exposes the logits so the engine
can read predictions (early stop, picking the restart that fools). A third party registers more::

    @register_objective("my-loss", needs_labels=False, help="what it measures")
    def make_my_loss(model, x, y, *, weight=1.0): ...
    pgd(model, x, None, ..., objective="my-loss", objective_kwargs={"weight": 2.0})

(a plain ``OBJECTIVES.register(name)`` works too; such objectives count as label-free).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InputError
from ..registry import Registry
from ..shard import global_rows
from .geometry import work_dtype

Objective = Callable[[Tensor], Tensor]
OBJECTIVES: Registry = Registry("objective")
TEMPERATURE = 0.5  # NT-Xent's temperature in ACL / SimCLR-CIFAR


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


def nt_xent_per_anchor(z1: Tensor, z2: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy) of every anchor (Chen et al. 2020).

    With z = normalise(cat(z1, z2)) (2N rows) and s_ik = z_i . z_k / temperature, anchor i's
    positive is its other view p(i) = i +- N and its negatives are the other 2N - 2 rows:
    ``l_i = -s_ip(i) + log sum_{k != i} exp(s_ik)``.

    Under torchrun, inside a sharded training step (:func:`robustlab.shard.sharded`), z1 and z2
    are this rank's rows; they are gathered (with their gradient) into the global batch first, so
    the loss, and the contrastive attack maximising it, are the global batch's, as in one process.

    Args:
        z1, z2: (N, D) projections of the first and second views (row i of both: the same image).
        temperature: tau > 0.
    Returns:
        (2N,) per-anchor losses, in float32 (or wider): rows 0..N-1 anchor on view 1, N..2N-1 on
        view 2 (N: the global batch's size in a sharded step).
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise InputError(f"NT-Xent needs two (N, D) projections of the same shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    z1, z2 = global_rows(z1, z2)  # this rank's rows -> the global batch's (a no-op elsewhere)
    n = z1.shape[0]
    if n < 2:
        raise InputError(f"NT-Xent needs at least 2 images per batch (the other images of the "
                         f"batch are the negatives), got a batch of {n}; use a batch size >= 2 "
                         "(SimCLR/ACL use 256-512)")
    if not temperature > 0:
        raise ConfigError(f"the NT-Xent temperature must be > 0, got {temperature!r}")
    z = torch.cat([z1, z2]).to(work_dtype(z1.dtype))
    z = F.normalize(z, dim=1)
    sim = z @ z.t() / temperature  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2N,)
    return torch.logsumexp(sim, dim=1) - sim[torch.arange(2 * n, device=z.device), pos]


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """The SimCLR loss: the mean of :func:`nt_xent_per_anchor` over the 2N anchors (0-d tensor)."""
    return nt_xent_per_anchor(z1, z2, temperature).mean()


@register_objective("nt-xent", needs_labels=False,
                    help="NT-Xent between two augmented views (ACL contrastive attack, Jiang et "
                         "al. 2020); label-free")
def make_nt_xent(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor | None = None, *,
                 x_pair: Tensor | None = None, temperature: float = TEMPERATURE) -> Callable:
    """The contrastive attack's objective for the PGD engine (ACL, Jiang et al. 2020).

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, D) projections (encoder + projection head).
        x: without ``x_pair``: the two views stacked, (2N, C, H, W) = cat(view1, view2), both
            attacked (A2A). With ``x_pair``: the N images of the attacked view (A2S).
        y: ignored (label-free).
        x_pair: (N, C, H, W) clean second view, kept fixed; its projections are computed once here.
        temperature: the NT-Xent temperature.
    Returns:
        ``loss(x_adv) -> per-sample losses``: (2N,) per anchor for A2A; for A2S (N,), the losses of
        the two anchors of each pair added, so their sum is the batch's total NT-Xent.
    """
    if x_pair is None:
        if x.shape[0] % 2:
            raise InputError(f"the nt-xent objective without x_pair needs the two views stacked "
                             f"(an even batch of 2N images), got {x.shape[0]}")

        def both(x_adv: Tensor) -> Tensor:
            z = model(x_adv)
            half = z.shape[0] // 2
            return nt_xent_per_anchor(z[:half], z[half:], temperature)
        return both
    if x_pair.shape != x.shape:
        raise InputError(f"x_pair must have the shape of x, got {tuple(x_pair.shape)} and "
                         f"{tuple(x.shape)}")
    with torch.no_grad():
        z_pair = model(x_pair.to(x.dtype)).detach()  # (N, D), fixed during the attack

    def one(x_adv: Tensor) -> Tensor:
        per = nt_xent_per_anchor(model(x_adv), z_pair.to(x_adv.device), temperature)
        half = per.shape[0] // 2
        return per[:half] + per[half:]
    return one


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
