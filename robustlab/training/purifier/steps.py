"""One mini-batch of the purifier trainer (SSR report, Algorithm 2; Pix2Pix's update order).

x (clean) -> x' = feature_distortion(P_n, x) -> G(x') -> critic step on (x', x) real vs
(x', G(x')) fake -> generator step on the weighted loss with the critic frozen. Labels are never
an argument here: the training signal is the clean image itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...attacks import feature_distortion
from ...errors import TrainingDiverged
from ...purifiers import LossWeights, cgan_d_loss, generator_loss


@dataclass
class GanParts:
    """The live objects of a purifier run: generator G, critic D, their Adam optimisers, the loss
    weights, the attack's extractor and the perceptual loss's extractor (often the same)."""

    generator: nn.Module
    critic: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    weights: LossWeights
    extractor: nn.Module
    perceptual: nn.Module
    gan_mode: str = "minimax"  # the generator's cGAN term: log(1 - D) or non-saturating -log D


def _finite(value: torch.Tensor | float, which: str, where: str) -> None:
    if not math.isfinite(float(value.detach()) if torch.is_tensor(value) else float(value)):
        raise TrainingDiverged(f"the {which} loss became non-finite ({where}); the run stopped "
                               "before updating with it")


def critic_step(parts: GanParts, x_adv: torch.Tensor, x: torch.Tensor, fake: torch.Tensor,
                where: str = "") -> torch.Tensor:
    """Update D on (x', x) real vs (x', G(x')) fake (G(x') detached, so G is untouched).

    Returns the critic loss (detached). Raises TrainingDiverged before the update when it is not
    finite.
    """
    d_loss = cgan_d_loss(parts.critic, x_adv, x, fake)
    _finite(d_loss, "critic", where)
    parts.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    parts.opt_d.step()
    return d_loss.detach()


def generator_step(parts: GanParts, x_adv: torch.Tensor, x: torch.Tensor, fake: torch.Tensor,
                   where: str = "") -> dict[str, float]:
    """Update G on the weighted loss (SSR eq. 5); the critic's parameters are kept out of the
    graph (``cgan_g_loss`` freezes them), so D is untouched. Returns the loss terms as floats."""
    total, logs = generator_loss(parts.weights, critic=parts.critic, extractor=parts.perceptual,
                                 gan_mode=parts.gan_mode,
                                 x_adv=x_adv, x_clean=x, x_fake=fake)
    _finite(logs["total"], "generator", where)
    parts.opt_g.zero_grad(set_to_none=True)
    total.backward()
    parts.opt_g.step()
    return logs


def train_step(parts: GanParts, x: torch.Tensor, *, attack: Callable[[torch.Tensor], torch.Tensor],
               autocast, where: str = "") -> dict[str, torch.Tensor | float]:
    """Algorithm 2 on one clean batch ``x`` (B, C, H, W) in [0, 1].

    Args:
        attack: x -> x' (the feature-distortion attack with its settings and generator bound).
        autocast: a context-manager factory for the forward passes (AMP or a null context).
    Returns:
        The batch's statistics: "d_loss" (tensor), "g_loss" and each generator term (floats),
        "mse_purified" = MSE(G(x'), x) and "mse_perturbed" = MSE(x', x) (tensors).
    """
    x_adv = attack(x)  # (B, C, H, W) in the eps-ball around x; extractor frozen, no grads kept
    parts.generator.train()
    parts.critic.train()
    with autocast():
        fake = parts.generator(x_adv)  # G(x'), (B, C, H, W) in [0, 1]
        d_loss = critic_step(parts, x_adv, x, fake, where)
        logs = generator_step(parts, x_adv, x, fake, where)
    stats: dict[str, torch.Tensor | float] = {f"loss_{k}": v for k, v in logs.items() if k != "total"}
    stats["g_loss"] = logs["total"]
    stats["d_loss"] = d_loss.float()
    with torch.no_grad():
        stats["mse_purified"] = F.mse_loss(fake.detach().float(), x)
        stats["mse_perturbed"] = F.mse_loss(x_adv, x)
    return stats


def make_attack(extractor: nn.Module, *, eps: float, steps: int, step_size: float | None,
                random_start: bool, generator: torch.Generator,
                amp_dtype: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-batch adversary of Algorithm 1 (feature distortion on the fixed extractor)."""
    def attack(x: torch.Tensor) -> torch.Tensor:
        return feature_distortion(extractor, x, eps=eps, steps=steps, step_size=step_size,
                                  random_start=random_start, generator=generator,
                                  amp_dtype=amp_dtype)
    return attack
