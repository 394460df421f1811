"""Objectives: per-sample losses against hand computations; third-party registration."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustlab.attacks import OBJECTIVES, pgd, register_objective
from robustlab.errors import ConfigError


def _fixed_logits_model(logits_fn):
    class M(nn.Module):
        def forward(self, x):
            return logits_fn(x)
    return M()


def test_ce_matches_hand_computation():
    z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 1])
    loss = OBJECTIVES.get("ce")(None, None, y).from_logits(z)
    hand = [-(z[i, y[i]] - math.log(sum(math.exp(v) for v in z[i].tolist()))) for i in range(2)]
    assert torch.allclose(loss, torch.tensor(hand), atol=1e-6)


def test_cw_margin_matches_hand_computation():
    z = torch.tensor([[2.0, 0.5, -1.0, 1.5], [0.0, 4.0, 3.0, -2.0], [1.0, 1.0, 1.0, 1.0]])
    y = torch.tensor([0, 2, 3])
    loss = OBJECTIVES.get("cw")(None, None, y).from_logits(z)
    # max other logit - true logit, by hand: 1.5 - 2, 4 - 3, 1 - 1
    assert torch.allclose(loss, torch.tensor([-0.5, 1.0, 0.0]))


def test_kl_matches_hand_computation_and_is_label_free():
    clean = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.3, 0.1]])
    adv = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.3, 0.1]])
    calls = []

    def fn(x):
        calls.append(1)
        return clean if len(calls) == 1 else adv
    obj = OBJECTIVES.get("kl")(_fixed_logits_model(fn), torch.zeros(2, 1, 1, 1), None)

    def softmax(v):
        e = [math.exp(t) for t in v]
        return [t / sum(e) for t in e]
    hand = []
    for i in range(2):
        p, q = softmax(clean[i].tolist()), softmax(adv[i].tolist())
        hand.append(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q)))
    loss = obj(torch.zeros(2, 1, 1, 1))
    assert torch.allclose(loss, torch.tensor(hand), atol=1e-6)
    assert hand[0] > 0.1 and abs(hand[1]) < 1e-9
    assert len(calls) == 2  # the clean prediction was computed once, in make()


def test_kl_clean_prediction_is_detached():
    lin = nn.Linear(4, 3)
    x = torch.rand(2, 4, 1, 1)
    model = nn.Sequential(nn.Flatten(), lin)
    obj = OBJECTIVES.get("kl")(model, x, None)
    xa = (x + 0.1).requires_grad_(True)
    loss = obj(xa).sum()
    (g,) = torch.autograd.grad(loss, lin.weight)
    # Hand gradient w.r.t. W of KL(p || softmax(W xa + b)) with p fixed: (q - p)^T xa.
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        q = torch.softmax(model(xa), 1)
    assert torch.allclose(g, (q - p).T @ xa.detach().flatten(1), atol=1e-6)


def test_feature_distance_matches_hand_computation():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]])
    extractor = _fixed_logits_model(lambda x: x.flatten(1) @ w.T)
    x = torch.tensor([[0.1, 0.2], [0.5, 0.5]]).view(2, 1, 1, 2)
    xa = torch.tensor([[0.3, 0.2], [0.5, 0.5]]).view(2, 1, 1, 2)
    loss = OBJECTIVES.get("feature")(extractor, x, None)(xa)
    # P(x') - P(x) = W (x' - x): (0.2, 0.1, 0) -> 0.2236; the second sample has not moved
    assert torch.allclose(loss, torch.tensor([math.sqrt(0.05), 0.0]), atol=1e-6)


# A third-party objective with an extra keyword through objective_kwargs, label-free.
if "test-pull-toward" not in OBJECTIVES:
    @register_objective("test-pull-toward", needs_labels=False, help="test: -||x' - anchor||^2")
    def _make_pull(model, x, y, *, anchor, weight=1.0):
        def loss(x_adv):
            model(x_adv)  # an objective may ignore the model's output entirely
            return -weight * (x_adv - anchor).flatten(1).pow(2).sum(1)
        return loss


def test_third_party_objective_with_kwargs_and_no_labels():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    x = torch.full((2, 3, 2, 2), 0.5)
    anchor = torch.ones_like(x)
    x_adv = pgd(model, x, None, eps=0.1, step_size=0.05, steps=3, random_start=False,
                objective="test-pull-toward", objective_kwargs={"anchor": anchor, "weight": 2.0})
    assert torch.allclose(x_adv, x + 0.1)  # maximising -||x'-1||^2 pushes every pixel up to eps
    with pytest.raises(ConfigError, match="anchor"):
        pgd(model, x, None, eps=0.1, step_size=0.05, steps=3, objective="test-pull-toward",
            objective_kwargs={"anchr": anchor})


def test_objective_factory_passed_directly():
    def make(model, x, y):
        return lambda xa: xa.flatten(1).sum(1)
    x = torch.full((1, 1, 2, 2), 0.5)
    out = pgd(nn.Identity(), x, eps=0.2, step_size=0.2, steps=1, random_start=False,
              objective=make)
    assert torch.allclose(out, x + 0.2)
