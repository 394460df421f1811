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

The adversary (``ContrastiveAttack.adversary``): "pgd" (ACL's), or "yopo", the adversary of
YOPO-m-n (Zhang et al. 2019; the traffic-sign report's "generated using PGD or YOPO"): on the
same NT-Xent objective and in the same mode, m full forward-backward passes through the frozen
encoder each give the adjoint at its first layer, and each is followed by n cheap updates of
the view's perturbation through that layer only (m * n updates for the price of m passes). The
encoder then trains on the finished views exactly as with PGD (ACL's step: one pass on them), so
the weight-gradient reuse of classifier YOPO (``robustlab train --method yopo``) is not part of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ...attacks import frozen_eval, pgd
from ...attacks.objectives import TEMPERATURE, make_nt_xent, nt_xent
from ...models.first_layer import FirstLayer, find_first_layer
from ...registry import Registry
from ...runtime import amp_context, amp_dtype
from ..classifier.yopo import inner_updates, start_perturbation
from ...shard import shard_start
from .dual_bn import bn_branch
from .projection import ProjectionModel


@dataclass(frozen=True)
class ContrastiveAttack:
    """The contrastive attack (ACL: linf eps 8/255, step 2/255, 5 steps, uniform start).

    ``adversary="yopo"``: YOPO-``yopo_m``-``yopo_n`` instead of PGD (``steps`` unused,
    ``step_size`` the inner step), splitting the network after ``first_layer``."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 5
    temperature: float = TEMPERATURE
    amp_dtype: Optional[torch.dtype] = None
    adversary: str = "pgd"
    yopo_m: int = 5
    yopo_n: int = 3
    first_layer: Optional[FirstLayer] = None


def contrastive_attack(cfg, net: torch.nn.Module, probe: Tensor) -> ContrastiveAttack:
    """The attack a PretrainConfig asks for; with the yopo adversary, ``net``'s first layer found
    on ``probe`` (a few images in [0, 1]), refused clearly when it cannot be."""
    layer = None
    if cfg.adversary == "yopo":
        layer = find_first_layer(net, probe, who="--adversary yopo")
    # the run's autocast dtype: the attack's passes in it, its steps and projection in float32
    return ContrastiveAttack(cfg.eps, cfg.step_size, cfg.steps, cfg.temperature,
                             amp_dtype=amp_dtype(cfg.amp),
                             adversary=cfg.adversary, yopo_m=cfg.yopo_m, yopo_n=cfg.yopo_n,
                             first_layer=layer)


def yopo_views(net: torch.nn.Module, x: Tensor, attack: ContrastiveAttack,
               generator: torch.Generator, x_pair: Tensor | None = None) -> Tensor:
    """YOPO-m-n's adversary on NT-Xent (the encoder in eval mode, frozen): from a uniform start,
    m times one full pass to the adjoint p = dNT-Xent / d f0 (the backward stops at f0's output),
    then n sign steps of ``step_size`` through f0 alone. Returns views in the eps-ball and
    [0, 1]."""
    layer, a = attack.first_layer, attack
    with frozen_eval(net):
        objective = make_nt_xent(net, x, None, x_pair=x_pair, temperature=a.temperature)
        eta = start_perturbation(x, a.eps, generator)
        for _ in range(a.yopo_m):
            with layer.adjoint() as leaves, amp_context(a.amp_dtype, x.device):
                total = objective(x + eta).sum()  # the batch's NT-Xent, to be maximised
            (p,) = torch.autograd.grad(total, leaves)
            eta = inner_updates(layer, net, x, eta, p, eps=a.eps, step_size=a.step_size,
                                n=a.yopo_n)
    return (x + eta).detach().to(x.dtype)


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
    if attack.adversary == "yopo":
        return yopo_views(net, x, attack, generator, x_pair)
    kwargs = {"temperature": attack.temperature}
    if x_pair is not None:
        kwargs["x_pair"] = x_pair
    # under torchrun: this rank's rows of the global batch's start (None: pgd draws it)
    start = shard_start(x, attack.eps, generator, blocks=1 if x_pair is not None else 2)
    return pgd(net, x, None, eps=attack.eps, step_size=attack.step_size, steps=attack.steps,
               random_start=True, objective="nt-xent", objective_kwargs=kwargs,
               generator=generator, amp_dtype=attack.amp_dtype, init=start)


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
