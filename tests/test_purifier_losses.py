"""Purifier losses against hand computations, and the loss presets of the SSR report."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from robustlab.errors import ConfigError, InputError
from robustlab.purifiers import (CRITICS, DEFAULT_LOSS_PRESET, LOSS_PRESETS, PURIFIERS, LossWeights,
                                 cgan_d_loss, cgan_g_loss, create_critic, create_purifier,
                                 generator_loss, l1_loss, l2_loss, perceptual_loss)

# (1, 1, 2, 2) images; differences out - target = -0.5, 0, 1, -0.75
OUT = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])
TARGET = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]]])
L1 = (0.5 + 0 + 1 + 0.75) / 4  # 0.5625
L2 = (0.25 + 0 + 1 + 0.5625) / 4  # 0.453125
# features f(x) = (2x, -x): squared feature error per pixel = 4 d^2 + d^2 over 2 channels
PERCEPTUAL = 2.5 * L2


def bce_real(z: float) -> float:  # -log(sigmoid(z))
    return -math.log(1 / (1 + math.exp(-z)))


def bce_fake(z: float) -> float:  # -log(1 - sigmoid(z))
    return -math.log(1 - 1 / (1 + math.exp(-z)))


class StubCritic(nn.Module):
    """Logits 4*x_other - 2 scaled by a parameter s = 1: hand-computable BCE."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(1.0))

    def forward(self, x_cond, x_other):
        return self.s * (4 * x_other - 2)


class Exploding(nn.Module):
    def forward(self, *args):
        raise AssertionError("a zero-weight term was computed")


def extractor() -> nn.Module:
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
    return conv


def hand_mean(values) -> float:
    return sum(values) / len(values)


def test_pixel_losses_golden():
    assert l1_loss(OUT, TARGET).item() == pytest.approx(L1)
    assert l2_loss(OUT, TARGET).item() == pytest.approx(L2)
    with pytest.raises(InputError, match="same shape"):
        l2_loss(OUT, TARGET[..., :1])


def test_perceptual_golden_and_gradient_flow():
    ext = nn.Sequential(extractor(), nn.BatchNorm2d(2)).train()
    with torch.no_grad():
        ext[1].running_mean.zero_(), ext[1].running_var.fill_(1.0)
    out, target = OUT.clone().requires_grad_(), TARGET.clone().requires_grad_()
    loss = perceptual_loss(ext, out, target)
    # eval-mode BN with mean 0, var 1 is the identity up to its eps
    assert loss.item() == pytest.approx(PERCEPTUAL / (1 + ext[1].eps), rel=1e-6)
    loss.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert target.grad is None
    assert all(p.grad is None for p in ext.parameters())  # frozen extractor
    assert all(p.requires_grad for p in ext.parameters())  # flags restored
    assert ext.training and ext[1].training  # mode restored
    assert torch.equal(ext[1].running_mean, torch.zeros(2))  # ran in eval mode: stats untouched


def test_cgan_d_loss_golden_and_detaches_fake():
    critic = StubCritic()
    x_adv, x_clean = torch.rand(1, 1, 2, 2), TARGET
    w = torch.tensor(1.0, requires_grad=True)
    x_fake = w * OUT  # stands for G(x')
    loss = cgan_d_loss(critic, x_adv, x_clean, x_fake)
    real = [bce_real(4 * v - 2) for v in TARGET.flatten().tolist()]
    fake = [bce_fake(4 * v - 2) for v in OUT.flatten().tolist()]
    assert loss.item() == pytest.approx(0.5 * (hand_mean(real) + hand_mean(fake)), rel=1e-6)
    loss.backward()
    assert w.grad is None  # never reaches the generator
    assert critic.s.grad is not None and critic.s.grad != 0


def test_cgan_g_loss_golden_minimax_default():
    """The default generator term is log(1 - D(x', G(x'))) (REFERENCE.md), to be minimised."""
    import math

    critic = StubCritic()
    x_fake = OUT.clone().requires_grad_()
    loss = cgan_g_loss(critic, torch.rand(1, 1, 2, 2), x_fake)
    d = [1 / (1 + math.exp(-(4 * v - 2))) for v in OUT.flatten().tolist()]  # D = sigmoid(logit)
    assert loss.item() == pytest.approx(hand_mean([math.log(1 - p) for p in d]), rel=1e-6)
    loss.backward()
    assert x_fake.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="unknown gan_mode"):
        cgan_g_loss(critic, torch.rand(1, 1, 2, 2), x_fake, mode="wgan")


def test_cgan_g_loss_golden_non_saturating():
    critic = StubCritic()
    x_fake = OUT.clone().requires_grad_()
    loss = cgan_g_loss(critic, torch.rand(1, 1, 2, 2), x_fake, mode="non-saturating")
    expected = hand_mean([bce_real(4 * v - 2) for v in OUT.flatten().tolist()])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert x_fake.grad.abs().sum() > 0
    assert critic.s.grad is None and critic.s.requires_grad  # frozen during the call, restored


def test_presets_have_the_reports_numbers():
    expected = {"A-L1": (1, 100, 0, 0, "unet-a", "patchgan-a"),
                "B1": (1, 0, 0, 10, "unet-b", "patchgan-b"),
                "B2": (1, 0, 0, 100, "unet-b", "patchgan-b"),
                "B3": (1, 0, 10, 100, "unet-b", "patchgan-b"),
                "NRP": (5e-3, 1e-2, 0, 1, "nrp", "patchgan-b")}
    assert LOSS_PRESETS.names() == sorted(expected)
    assert DEFAULT_LOSS_PRESET == "B3"
    for name, (cgan, l1, l2, perc, gen, crit) in expected.items():
        p = LOSS_PRESETS.get(name)
        assert isinstance(p, LossWeights)
        assert (p.cgan, p.l1, p.l2, p.perceptual, p.generator, p.critic) == (cgan, l1, l2, perc, gen,
                                                                              crit)
        assert p.weights == LossWeights(cgan, l1, l2, perc)
        assert p.generator in PURIFIERS and p.critic in CRITICS
    with pytest.raises(dataclasses.FrozenInstanceError):
        LOSS_PRESETS.get("B3").l2 = 0.0


def test_loss_weights_validation():
    with pytest.raises(ConfigError, match="l2"):
        LossWeights(1, 0, -1, 0)
    with pytest.raises(ConfigError, match="all loss weights are 0"):
        LossWeights(0, 0, 0, 0)


def test_generator_loss_weighted_total():
    x_adv = torch.rand(1, 1, 2, 2)
    x_fake = OUT.clone().requires_grad_()
    total, logs = generator_loss(LossWeights(1, 2, 3, 4), critic=StubCritic(), extractor=extractor(),
                                 gan_mode="non-saturating", x_adv=x_adv, x_clean=TARGET,
                                 x_fake=x_fake)
    gan = hand_mean([bce_real(4 * v - 2) for v in OUT.flatten().tolist()])
    expected = gan + 2 * L1 + 3 * L2 + 4 * PERCEPTUAL
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert logs == pytest.approx({"cgan": gan, "l1": L1, "l2": L2, "perceptual": PERCEPTUAL,
                                  "total": expected}, rel=1e-6)
    total.backward()
    assert x_fake.grad.abs().sum() > 0


def test_generator_loss_skips_zero_weight_terms():
    total, logs = generator_loss(LossWeights(0, 1, 0, 0), critic=Exploding(), extractor=Exploding(),
                                 x_adv=OUT, x_clean=TARGET, x_fake=OUT)
    assert total.item() == pytest.approx(L1) and set(logs) == {"l1", "total"}
    total, logs = generator_loss(LossWeights(1, 0, 1, 0), critic=StubCritic(), extractor=None,
                                 x_adv=OUT, x_clean=TARGET, x_fake=OUT)
    assert set(logs) == {"cgan", "l2", "total"}
    with pytest.raises(ConfigError, match="critic"):
        generator_loss(LossWeights(1, 0, 0, 0), critic=None, extractor=None,
                       x_adv=OUT, x_clean=TARGET, x_fake=OUT)
    with pytest.raises(ConfigError, match="extractor"):
        generator_loss(LossWeights(0, 0, 0, 1), critic=None, extractor=None,
                       x_adv=OUT, x_clean=TARGET, x_fake=OUT)


def test_one_b3_step_trains_generator_not_critic():
    torch.manual_seed(0)
    gen = create_purifier("unet-b", 1, width=0.125)
    critic = create_critic("patchgan-b", 1, width=0.125)
    x_clean = torch.rand(2, 1, 32, 32)
    x_adv = (x_clean + 0.05 * torch.randn_like(x_clean)).clamp(0, 1)
    x_fake = gen(x_adv)
    total, _ = generator_loss(LOSS_PRESETS.get("B3"), critic=critic, extractor=extractor(),
                              x_adv=x_adv, x_clean=x_clean, x_fake=x_fake)
    total.backward()
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.grad is not None for p in gen.parameters())
    d_loss = cgan_d_loss(critic, x_adv, x_clean, x_fake)
    gen.zero_grad(set_to_none=True)
    d_loss.backward()
    assert all(p.grad is None for p in gen.parameters())
    assert all(p.grad is not None for p in critic.parameters())
