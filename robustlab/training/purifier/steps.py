"""One mini-batch of the purifier trainer (SSR report, Algorithm 2; Pix2Pix's update order).

x (clean) -> x' = feature_distortion(P_n, x) -> G(x') -> critic step on (x', x) real vs
(x', G(x')) fake -> generator step on the weighted loss with the critic frozen. Labels are never
an argument here: the training signal is the clean image itself.

Several processes (torchrun): with ``shard`` (:func:`robustlab.shard.sharded`) ``x`` is this
rank's slice of the global batch. The attack's random start is the global batch's rows, batch norm
and dropout of G and D (converted by :func:`robustlab.shard.convert_layers`) act over the global
batch, each rank back-propagates its part of the global mean loss (its mean times its share of
the batch) and the parts of the gradient are summed before each optimiser step; the finiteness
checks read the global loss, so every rank stops together. The updates equal one process's up to
rounding.

fp16 (``scaling_g``/``scaling_d``): each loss is scaled before its backward pass, the parts of the
scaled gradient are summed over ranks, and the scaler skips a step whose gradients overflowed
(the weights keep their values, the scale halves, alike on every rank since the sums are). The
finiteness checks read the unscaled losses, never the gradients: a skipped step is no divergence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...attacks import feature_distortion, pgd
from ...defaults import default_step
from ...distributed import all_reduce_grads, all_sum
from ...errors import TrainingDiverged
from ...purifiers import LossWeights, cgan_d_loss, generator_loss
from ...runtime import GradScaling
from ...shard import Shard, shard_start


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
    scaling_g: GradScaling | None = None  # fp16: the gradient scalers of G's and D's steps
    scaling_d: GradScaling | None = None
    forward_g: nn.Module | None = None  # what the passes run (--compile: G and D compiled);
    forward_d: nn.Module | None = None  # None: G and D themselves

    @property
    def run_g(self) -> nn.Module:
        """G as the forward passes run it (the optimiser and checkpoints keep ``generator``)."""
        return self.generator if self.forward_g is None else self.forward_g

    @property
    def run_d(self) -> nn.Module:
        """D as the forward passes run it (the optimiser and checkpoints keep ``critic``)."""
        return self.critic if self.forward_d is None else self.forward_d


def _finite(value: torch.Tensor | float, which: str, where: str) -> None:
    if not math.isfinite(float(value.detach()) if torch.is_tensor(value) else float(value)):
        raise TrainingDiverged(f"the {which} loss became non-finite ({where}); the run stopped "
                               "before updating with it")


def global_mean(value: torch.Tensor, shard: Shard | None) -> torch.Tensor:
    """The global batch's mean of a loss that is this rank's mean (an empty slice adds nothing)."""
    if shard is None:
        return value.detach()
    part = (value.detach().float() * shard.rows if shard.rows
            else torch.zeros((), device=value.device))  # an empty slice's mean is NaN
    return all_sum(part.reshape(1), shard.world)[0] / shard.batch


def _update(loss: torch.Tensor, net: nn.Module, opt: torch.optim.Optimizer,
            scaling: GradScaling | None, shard: Shard | None) -> None:
    """Backward, the gradient summed over ranks, the step (through ``scaling`` when given)."""
    if shard is not None:  # this rank's part of the global mean (an empty slice: zero gradients)
        loss = loss * (shard.rows / shard.batch)
    if scaling is None:
        loss.backward()
    else:
        scaling.backward(loss)
    if shard is not None:
        all_reduce_grads(net.parameters(), shard.world, weight=1.0)
    if scaling is None:
        opt.step()
    else:
        scaling.step(opt)


def critic_step(parts: GanParts, x_adv: torch.Tensor, x: torch.Tensor, fake: torch.Tensor,
                where: str = "", shard: Shard | None = None) -> torch.Tensor:
    """Update D on (x', x) real vs (x', G(x')) fake (G(x') detached, so G is untouched).

    Returns the critic loss (detached; this rank's). Raises TrainingDiverged before the update when
    the (global batch's) loss is not finite.
    """
    d_loss = cgan_d_loss(parts.run_d, x_adv, x, fake)
    _finite(global_mean(d_loss, shard), "critic", where)
    parts.opt_d.zero_grad(set_to_none=True)
    _update(d_loss, parts.critic, parts.opt_d, parts.scaling_d, shard)
    return d_loss.detach()


def generator_step(parts: GanParts, x_adv: torch.Tensor, x: torch.Tensor, fake: torch.Tensor,
                   where: str = "", shard: Shard | None = None) -> dict[str, float]:
    """Update G on the weighted loss (SSR eq. 5); the critic's parameters are kept out of the
    graph (``cgan_g_loss`` freezes them), so D is untouched. Returns the loss terms as floats
    (this rank's)."""
    total, logs = generator_loss(parts.weights, critic=parts.run_d, extractor=parts.perceptual,
                                 gan_mode=parts.gan_mode,
                                 x_adv=x_adv, x_clean=x, x_fake=fake)
    _finite(logs["total"] if shard is None else global_mean(total, shard), "generator", where)
    parts.opt_g.zero_grad(set_to_none=True)
    _update(total, parts.generator, parts.opt_g, parts.scaling_g, shard)
    return logs


def train_step(parts: GanParts, x: torch.Tensor, *, attack: Callable[[torch.Tensor], torch.Tensor],
               autocast, where: str = "",
               shard: Shard | None = None) -> dict[str, torch.Tensor | float]:
    """Algorithm 2 on one clean batch ``x`` (B, C, H, W) in [0, 1].

    Args:
        attack: x -> x' (the feature-distortion attack with its settings and generator bound).
        autocast: a context-manager factory for the forward passes (AMP or a null context).
        shard: under torchrun, the global batch ``x`` is a slice of (see the module docstring).
    Returns:
        The batch's statistics: "d_loss" (tensor), "g_loss" and each generator term (floats),
        "mse_purified" = MSE(G(x'), x) and "mse_perturbed" = MSE(x', x) (tensors); this rank's
        means with ``shard`` (NaN for an empty slice: weigh them by its size).
    """
    x_adv = attack(x)  # (B, C, H, W) in the eps-ball around x; extractor frozen, no grads kept
    parts.generator.train()
    parts.critic.train()
    with autocast():
        fake = parts.run_g(x_adv)  # G(x'), (B, C, H, W) in [0, 1]
        d_loss = critic_step(parts, x_adv, x, fake, where, shard)
        logs = generator_step(parts, x_adv, x, fake, where, shard)
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
    """The per-batch adversary of Algorithm 1 (feature distortion on the fixed extractor).
    In a sharded step its random start is this rank's rows of the global batch's."""
    def attack(x: torch.Tensor) -> torch.Tensor:
        start = shard_start(x, eps, generator) if random_start else None
        if start is None:
            return feature_distortion(extractor, x, eps=eps, steps=steps, step_size=step_size,
                                      random_start=random_start, generator=generator,
                                      amp_dtype=amp_dtype)
        step = step_size if step_size is not None else (
            default_step("feature-distortion", eps) or 1.0)  # as feature_distortion's default
        return pgd(extractor, x, None, eps=eps, step_size=step, steps=steps, objective="feature",
                   init=start, amp_dtype=amp_dtype)
    return attack
