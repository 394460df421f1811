"""Hypothesis property tests: random small models and settings keep the attack invariants."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from robustlab.attacks import fast_fgsm, fgsm, pgd

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**16))
    b, c, hw, k = draw(st.integers(1, 4)), draw(st.sampled_from([1, 3])), draw(st.integers(2, 5)), \
        draw(st.integers(2, 5))
    torch.manual_seed(seed)
    if draw(st.booleans()):
        model = nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, k))
    else:
        w = draw(st.integers(1, 4))
        model = nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                              nn.Flatten(), nn.Dropout(0.2), nn.Linear(w * hw * hw, k))
    model.train(draw(st.booleans()))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, hw, hw, generator=g)
    x[0, 0, 0, 0] = draw(st.sampled_from([0.0, 1.0, 0.5]))  # pixels on the walls
    y = torch.randint(0, k, (b,), generator=g)
    return model, x, y


attack_settings = st.fixed_dictionaries({
    "eps": st.floats(0.0, 0.5),
    "steps": st.integers(1, 3),
    "step_frac": st.floats(0.05, 2.0),
    "norm": st.sampled_from(["linf", "l2"]),
    "random_start": st.booleans(),
    "objective": st.sampled_from(["ce", "cw", "kl"]),
    "targeted": st.booleans(),
    "early_stop": st.booleans(),
    "restarts": st.integers(1, 2),
})


def _state(model):
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


def _check(model, x, x_adv, eps, norm):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all()


@SETTINGS
@given(problems(), attack_settings, st.integers(0, 1000))
def test_pgd_invariants(problem, s, seed):
    model, x, y = problem
    x0, y0, before = x.clone(), y.clone(), _state(model)
    kw = dict(eps=s["eps"], step_size=max(s["eps"], 1e-3) * s["step_frac"], steps=s["steps"],
              norm=s["norm"], random_start=s["random_start"], objective=s["objective"],
              targeted=s["targeted"], early_stop=s["early_stop"], restarts=s["restarts"])
    a = pgd(model, x, y, generator=torch.Generator().manual_seed(seed), **kw)
    b = pgd(model, x, y, generator=torch.Generator().manual_seed(seed), **kw)
    _check(model, x, a, s["eps"], s["norm"])
    assert torch.equal(a, b)
    assert torch.equal(x, x0) and torch.equal(y, y0) and _state(model) == before
    if s["eps"] == 0:
        assert torch.equal(a, x)


@SETTINGS
@given(problems(), st.floats(0.0, 0.5), st.sampled_from(["linf", "l2"]))
def test_one_step_attacks_and_early_stop_never_raise_accuracy(problem, eps, norm):
    model, x, y = problem
    before = _state(model)
    for out in (fgsm(model, x, y, eps=eps, norm=norm),
                fast_fgsm(model, x, y, eps=eps, norm=norm,
                          generator=torch.Generator().manual_seed(0))):
        _check(model, x, out, eps, norm)
    assert _state(model) == before
    # Early stop from x itself returns every clean-misclassified sample unchanged, so per sample
    # "correct after the attack" implies "correct before": accuracy can never rise.
    model.eval()
    out = pgd(model, x, y, eps=eps, step_size=max(eps, 1e-3) / 2, steps=3, norm=norm,
              random_start=False, early_stop=True)
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
        adv_ok = model(out).argmax(1) == y
    assert not (adv_ok & ~clean_ok).any()
    assert torch.equal(out[~clean_ok], x[~clean_ok])


@pytest.mark.parametrize("norm", ["linf", "l2"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(), eps=st.floats(0.01, 0.5))
def test_early_stop_never_weaker_than_full_loop(norm, problem, eps):
    model, x, y = problem
    model.eval()
    kw = dict(eps=eps, step_size=eps / 2, steps=3, norm=norm)
    full = pgd(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    early = pgd(model, x, y, generator=torch.Generator().manual_seed(1), early_stop=True, **kw)
    with torch.no_grad():
        acc_full = (model(full).argmax(1) == y).sum()
        acc_early = (model(early).argmax(1) == y).sum()
    assert acc_early <= acc_full
