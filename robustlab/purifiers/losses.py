"""Purifier training losses of the SSR report (eq. 5): cGAN (BCE with logits), L1, L2, perceptual.

Small pure functions; the trainer (Algorithm 2) combines them through :func:`generator_loss`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_positive
from ..errors import ConfigError, InputError


def _same_shape(out: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if out.shape != target.shape:  # broadcasting would silently average the wrong pairs
        raise InputError(f"{what}: output {tuple(out.shape)} and target {tuple(target.shape)} "
                         "must have the same shape")


def l1_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel error, Pix2Pix's L1 term (report eq. 3)."""
    _same_shape(out, target, "l1_loss")
    return F.l1_loss(out, target)


def l2_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel error, the report's L2 term (eq. 5, weight lambda)."""
    _same_shape(out, target, "l2_loss")
    return F.mse_loss(out, target)


@contextmanager
def _frozen(module: nn.Module, eval_mode: bool) -> Iterator[None]:
    """Run ``module`` with parameters that record no gradient (optionally in eval mode); restore."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    modes = [(m, m.training) for m in module.modules()]  # per module: modes may be mixed
    for p, _ in flags:
        p.requires_grad_(False)
    if eval_mode:
        module.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def perceptual_loss(extractor: nn.Module, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Perceptual loss (Johnson et al. 2016): MSE between ``extractor`` features of out and target.

    The extractor is a frozen feature network (typically a dataset-trained VGG19's first 2 blocks,
    ``robustlab.models.feature_extractor``). It runs in eval mode with its parameters excluded from
    the graph (both restored afterwards), and the target's features carry no gradient, so only
    ``out`` (the purifier's output G(x')) receives one.

    Args:
        extractor: module mapping (B, C, H, W) [0, 1] images to features.
        out: purified images G(x'), (B, C, H, W) in [0, 1].
        target: clean images x, same shape.
    """
    _same_shape(out, target, "perceptual_loss")
    with _frozen(extractor, eval_mode=True):
        with torch.no_grad():
            feat_target = extractor(target)
        feat_out = extractor(out)
    return F.mse_loss(feat_out, feat_target)


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    labels = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)


def cgan_d_loss(critic: nn.Module, x_adv: torch.Tensor, x_clean: torch.Tensor,
                x_fake: torch.Tensor) -> torch.Tensor:
    """Conditional-GAN critic loss (Pix2Pix; SSR report eq. 2 and 5), binary cross-entropy.

    The pair (x', x) is labelled real and (x', G(x')) fake on every patch of the critic's map; the
    two BCE terms are averaged (Pix2Pix's 0.5 factor). ``x_fake`` is detached, so this loss never
    reaches the generator.

    Args:
        critic: (x_cond, x_other) -> (B, 1, h, w) logits.
        x_adv: perturbed inputs x' (the condition); x_clean: clean images x; x_fake: G(x').
    """
    real = critic(x_adv, x_clean)
    fake = critic(x_adv, x_fake.detach())
    return 0.5 * (_bce(real, True) + _bce(fake, False))


GAN_MODES = ("minimax", "non-saturating")


def cgan_g_loss(critic: nn.Module, x_adv: torch.Tensor, x_fake: torch.Tensor,
                mode: str = "minimax") -> torch.Tensor:
    """Generator's cGAN term, to be minimised (Goodfellow et al. 2014; Pix2Pix).

    ``"minimax"`` (default, as REFERENCE.md specifies): log(1 - D(x', G(x'))), computed stably from
    the critic's logits as -softplus(logit). ``"non-saturating"``: -log D(x', G(x')), i.e.
    BCE(D(x', G(x')), real), which keeps gradients alive while the critic wins (Pix2Pix's code).
    The report's eq. 2 is misprinted ("1 - log D(x', G(x'))"). The critic's parameters are kept
    out of the graph during the call (frozen during the generator step); its mode is left as found.
    """
    if mode not in GAN_MODES:
        raise ConfigError(f"unknown gan_mode {mode!r}; valid: {', '.join(GAN_MODES)}")
    with _frozen(critic, eval_mode=False):
        logits = critic(x_adv, x_fake)
    if mode == "minimax":
        return -F.softplus(logits).mean()  # log(1 - sigmoid(l)) = -softplus(l)
    return _bce(logits, True)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator objective (SSR eq. 5): cgan + l1 + l2 (lambda) + perceptual (alpha).

    All weights are finite and >= 0, at least one > 0; a zero weight skips its term entirely.
    """

    cgan: float
    l1: float
    l2: float
    perceptual: float

    def __post_init__(self) -> None:
        for f in fields(LossWeights):
            object.__setattr__(self, f.name, check_positive(f.name, getattr(self, f.name), True))
        if not any(getattr(self, f.name) for f in fields(LossWeights)):
            raise ConfigError("all loss weights are 0; give at least one term a positive weight")


def generator_loss(weights: LossWeights, *, critic: nn.Module | None, extractor: nn.Module | None,
                   gan_mode: str = "minimax",
                   x_adv: torch.Tensor, x_clean: torch.Tensor,
                   x_fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted generator objective of the SSR report (eq. 5; eq. 4 for the L1 preset).

    Terms with weight 0 are not computed (their critic/extractor may be None).

    Args:
        weights: term weights (e.g. ``LOSS_PRESETS.get("B3")``).
        critic: needed when ``weights.cgan > 0``; extractor: needed when ``weights.perceptual > 0``.
        x_adv: perturbed inputs x'; x_clean: clean targets x; x_fake: G(x'), all (B, C, H, W).

    Returns:
        (total, components): the weighted sum (a scalar tensor with gradient) and a dict of the
        unweighted value of each computed term plus "total", as floats for logging.
    """
    terms: dict[str, torch.Tensor] = {}
    if weights.cgan:
        if critic is None:
            raise ConfigError("the cGAN weight is > 0 but no critic was given")
        terms["cgan"] = cgan_g_loss(critic, x_adv, x_fake, gan_mode)
    if weights.l1:
        terms["l1"] = l1_loss(x_fake, x_clean)
    if weights.l2:
        terms["l2"] = l2_loss(x_fake, x_clean)
    if weights.perceptual:
        if extractor is None:
            raise ConfigError("the perceptual weight is > 0 but no feature extractor was given")
        terms["perceptual"] = perceptual_loss(extractor, x_fake, x_clean)
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    logs = {k: float(v.detach()) for k, v in terms.items()}
    logs["total"] = float(total.detach())
    return total, logs
