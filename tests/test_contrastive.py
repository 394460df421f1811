"""Contrastive building blocks: NT-Xent against a hand computation, the contrastive attack,
the projection model, dual batch norm."""
import math

import pytest
import torch

from robustlab import models
from robustlab.attacks import OBJECTIVES
from robustlab.errors import ConfigError, InputError
from robustlab.attacks.objectives import make_nt_xent, nt_xent, nt_xent_per_anchor
from robustlab.training.contrastive.projection import ProjectionModel, contrastive_preset
from robustlab.training.contrastive.dual_bn import (DualBatchNorm, branch_state_dict, bn_branch,
                                               convert_dual_bn, export_branch)
from robustlab.training.contrastive.methods import ContrastiveAttack, attack_views


def hand_nt_xent(z1, z2, t):
    """Independent reference: explicit loops over the 2N x 2N cosine-similarity matrix."""
    rows = z1.tolist() + z2.tolist()
    rows = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in rows]
    m, n = len(rows), len(rows) // 2
    total = 0.0
    for i in range(m):
        sim = [sum(a * b for a, b in zip(rows[i], rows[k])) / t for k in range(m)]
        denom = sum(math.exp(sim[k]) for k in range(m) if k != i)
        total += -math.log(math.exp(sim[(i + n) % m]) / denom)
    return total / m


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 4, 0.5), (4, 8, 0.1)])
def test_nt_xent_matches_hand_computation(n, d, t):
    g = torch.Generator().manual_seed(n * 10 + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(z1, z2, t).item() == pytest.approx(hand_nt_xent(z1, z2, t), rel=1e-5)


def test_nt_xent_golden_value():
    # two orthogonal images whose views coincide, tau = 1: each anchor has similarity 1 with its
    # positive and 0 with both negatives, so l = -1 + log(e + 2)
    e = torch.eye(2)
    assert nt_xent(e, e, 1.0).item() == pytest.approx(math.log(math.e + 2) - 1, rel=1e-6)
    per = nt_xent_per_anchor(e, e, 1.0)
    assert per.shape == (4,)


def test_nt_xent_refuses_batch_of_one():
    with pytest.raises(InputError, match="at least 2 images.*negatives"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4))


def _net(seed=0, name="small-cnn", channels=3):
    torch.manual_seed(seed)
    return ProjectionModel(models.create(name, 10, channels, width=0.25), proj_dim=16)


def _views(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 32, 32, generator=g)
    return base, (base + 0.1 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("mode", ["a2a", "a2s"])
def test_contrastive_attack_raises_loss_and_stays_in_ball(mode):
    torch.manual_seed(0)  # a random pixel-space projection tells images apart (a random CNN barely)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 32),
                              torch.nn.BatchNorm1d(32))
    v1, v2 = _views()
    attack = ContrastiveAttack(eps=8 / 255, step_size=2 / 255, steps=5)
    net.train()
    flags = [p.requires_grad for p in net.parameters()]
    gen = torch.Generator().manual_seed(0)
    if mode == "a2a":
        x = torch.cat([v1, v2])
        adv = attack_views(net, x, attack, gen)
        a1, a2 = adv[:6], adv[6:]
    else:
        x = v1
        adv = attack_views(net, v1, attack, gen, x_pair=v2)
        a1, a2 = adv, v2
    assert net.training and [p.requires_grad for p in net.parameters()] == flags
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    net.eval()
    with torch.no_grad():
        before = nt_xent(net(v1), net(v2)).item()
        after = nt_xent(net(a1), net(a2)).item()
    assert after > before + 1e-3


def test_objective_is_registered_label_free_and_checks_shapes():
    assert "nt-xent" in OBJECTIVES
    net = _net()
    v1, v2 = _views(4)
    with pytest.raises(InputError, match="even batch"):
        make_nt_xent(net, v1[:3])
    with pytest.raises(InputError, match="x_pair"):
        make_nt_xent(net, v1, x_pair=v2[:2])
    loss = make_nt_xent(net, v1, x_pair=v2)(v1)
    assert loss.shape == (4,)


def test_projection_model_keeps_a_plain_classifier():
    net = _net()
    plain = models.create("small-cnn", 10, 3, width=0.25)
    assert set(net.encoder.state_dict()) == set(plain.state_dict())
    out = net(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 16)
    head = {id(p) for p in net.encoder.head[-1].parameters()}
    trainable = {id(p) for p in net.trainable_parameters()}
    assert not head & trainable
    assert {id(p) for p in net.projector.parameters()} <= trainable


def test_dual_bn_keeps_two_sets_of_statistics():
    torch.manual_seed(0)
    model = models.create("resnet18", 10, 3, width=0.125)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert convert_dual_bn(model) == n_bn
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm)]
    model.train()
    with bn_branch(model, "adv"):
        model(torch.rand(4, 3, 32, 32) * 0.2)  # only the adversarial statistics move
    assert all(d.branch == "clean" for d in duals)
    first = duals[0]
    assert torch.equal(first.clean.running_mean, torch.zeros_like(first.clean.running_mean))
    assert not torch.equal(first.adv.running_mean, first.clean.running_mean)
    model(torch.rand(4, 3, 32, 32))  # now the clean ones, from other data
    assert not torch.equal(first.adv.running_mean, first.clean.running_mean)
    plain = export_branch(model, models.create("resnet18", 10, 3, width=0.125), "adv")
    sd = plain.state_dict()
    assert torch.equal(sd["blocks.0.1.running_mean"], first.adv.running_mean)
    assert set(branch_state_dict(model, "clean")) == set(sd)


def test_dual_bn_refuses_model_without_batch_norm():
    with pytest.raises(ConfigError, match="batch-norm"):
        convert_dual_bn(models.create("small-cnn", 10, 3, width=0.25))
    with pytest.raises(ConfigError, match="branch"):
        with bn_branch(torch.nn.Linear(2, 2), "noisy"):
            pass


def test_contrastive_preset_is_dataset_aware():
    class D:
        flip_ok = True
    assert contrastive_preset(D()) == "simclr"
    D.flip_ok = False
    assert contrastive_preset(D()) == "simclr-signs"


def test_nt_xent_objective_is_registered_with_the_attacks_alone():
    # the objective lives with the others: importing the attacks (not the trainers) registers it
    import subprocess
    import sys

    code = "from robustlab.attacks import OBJECTIVES; print(' '.join(OBJECTIVES.names()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "nt-xent" in out.stdout.split()
