"""Pre-training methods by name (:data:`PRETRAIN_METHODS`): how two views become an NT-Xent loss.

| name    | views the encoder trains on                                  | batch norm | paper    |
| ------- | ------------------------------------------------------------ | ---------- | -------- |
| simclr  | two clean augmented views                                    | shared     | SimCLR   |
| a2a     | both views attacked (PGD on NT-Xent)                         | shared     | ACL      |
| a2s     | view 1 attacked, view 2 clean                                | shared     | ACL      |
| dual-bn | clean pair (clean BN) + attacked pair (adv BN), mean of both | dual       | ACL "DS" |

(SimCLR: Chen et al. 2020; ACL: Jiang et al. 2020.)

Each method is ``step(net, v1, v2, attack, generator) -> (loss, stats)`` with v1, v2 the
(N, C, H, W) views in [0, 1]. The attacks run the one PGD engine with the "nt-xent" objective;
the engine puts the encoder in eval mode with frozen parameters during the attack (ACL's setting).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ...attacks import pgd
from ...attacks.objectives import TEMPERATURE, nt_xent
from ...registry import Registry
from .dual_bn import bn_branch
from .projection import ProjectionModel


@dataclass(frozen=True)
class ContrastiveAttack:
    """The contrastive attack (ACL: linf eps 8/255, step 2/255, 5 steps, uniform start)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 5
    temperature: float = TEMPERATURE
    amp_dtype: Optional[torch.dtype] = None


@dataclass(frozen=True)
class PretrainMethod:
    """A registered method: its step function and whether it needs dual batch norm."""

    step: Callable[..., tuple[Tensor, dict[str, Tensor]]]
    dual_bn: bool = False
    adversarial: bool = True


PRETRAIN_METHODS: Registry[PretrainMethod] = Registry("pre-training method")


def _register(name: str, help: str, dual_bn: bool = False, adversarial: bool = True):
    def deco(fn):
        PRETRAIN_METHODS.register(name, help=help)(PretrainMethod(fn, dual_bn, adversarial))
        return fn
    return deco


def attack_views(net: ProjectionModel, x: Tensor, attack: ContrastiveAttack,
                 generator: torch.Generator, x_pair: Tensor | None = None) -> Tensor:
    """PGD on NT-Xent: ``x`` = cat(v1, v2) for both views (A2A), or v1 with the clean ``x_pair``
    (A2S). Returns the adversarial images (same shape as x, in the eps-ball and in [0, 1])."""
    kwargs = {"temperature": attack.temperature}
    if x_pair is not None:
        kwargs["x_pair"] = x_pair
    return pgd(net, x, None, eps=attack.eps, step_size=attack.step_size, steps=attack.steps,
               random_start=True, objective="nt-xent", objective_kwargs=kwargs,
               generator=generator, amp_dtype=attack.amp_dtype)


def _pair_loss(net: ProjectionModel, a: Tensor, b: Tensor, attack: ContrastiveAttack) -> Tensor:
    z = net(torch.cat([a, b]))  # one forward for both views: batch norm sees the 2N images together
    return nt_xent(z[: a.shape[0]], z[a.shape[0]:], attack.temperature)


@_register("simclr", "SimCLR: NT-Xent between two clean views (Chen et al. 2020)",
           adversarial=False)
def simclr_step(net, v1, v2, attack, generator):
    return _pair_loss(net, v1, v2, attack), {}


@_register("a2a", "ACL A2A: both views attacked by PGD on NT-Xent (Jiang et al. 2020)")
def a2a_step(net, v1, v2, attack, generator):
    adv = attack_views(net, torch.cat([v1, v2]), attack, generator)
    n = v1.shape[0]
    return _pair_loss(net, adv[:n], adv[n:], attack), {}


@_register("a2s", "ACL A2S: one view attacked by PGD on NT-Xent, the other clean "
           "(Jiang et al. 2020)")
def a2s_step(net, v1, v2, attack, generator):
    adv1 = attack_views(net, v1, attack, generator, x_pair=v2)
    return _pair_loss(net, adv1, v2, attack), {}


@_register("dual-bn", "ACL dual stream: clean pair through clean BN + attacked pair through "
           "adversarial BN, losses averaged; fine-tuning uses the adversarial BN "
           "(Jiang et al. 2020)",
           dual_bn=True)
def dual_bn_step(net, v1, v2, attack, generator):
    n = v1.shape[0]
    with bn_branch(net, "adv"):
        adv = attack_views(net, torch.cat([v1, v2]), attack, generator)
        loss_adv = _pair_loss(net, adv[:n], adv[n:], attack)
    with bn_branch(net, "clean"):
        loss_clean = _pair_loss(net, v1, v2, attack)
    loss = (loss_clean + loss_adv) / 2
    return loss, {"nt_xent_clean": loss_clean.detach(), "nt_xent_adv": loss_adv.detach()}
