"""Contracts every registered attack keeps (STYLE.md rule 9), parametrised over ATTACKS."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from robustlab.attacks import ATTACKS, run_attack
from test_attack_support import (Counting, accuracy, make_data, model_for, settings_for, snapshot,
                                 trained_cnn)

HAS_AA = importlib.util.find_spec("pyautoattack") is not None
EPS = {"linf": 0.1, "l2": 1.5}


def _names():
    return [pytest.param(n, marks=pytest.mark.skipif(n == "autoattack" and not HAS_AA,
                                                     reason="pyautoattack not installed"))
            for n in ATTACKS.names()]


@pytest.fixture(scope="module")
def model():
    return trained_cnn()


@pytest.fixture(scope="module")
def data():
    return make_data(16, seed=1)


def _run(name, model, x, y, norm="linf", eps=None, seed=0):
    eps = EPS[norm] if eps is None else eps
    return run_attack(name, model_for(name, model), x, y, **settings_for(name, eps, norm, seed))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", _names())
def test_ball_range_shape_dtype_no_nan_no_mutation(name, norm, model, data):
    x, y = data
    x0, y0 = x.clone(), y.clone()
    x_adv = _run(name, model, x, y, norm)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= EPS[norm] + 1e-5).all()
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert x_adv.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name", _names())
def test_deterministic_under_seed(name, model, data):
    x, y = data
    a = _run(name, model, x, y, seed=3)
    b = _run(name, model, x, y, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", _names())
def test_never_raises_accuracy_and_moves(name, model, data):
    x, y = data
    clean = accuracy(model, x, y)
    assert clean == 1.0  # the fixture model is trained-ish
    x_adv = _run(name, model, x, y)
    assert accuracy(model, x_adv, y) <= clean
    assert not torch.equal(x_adv, x)


@pytest.mark.parametrize("name", _names())
def test_eps_zero_returns_a_copy_of_the_input(name, model, data):
    x, y = data
    x_adv = _run(name, model, x, y, eps=0.0)
    assert torch.equal(x_adv, x) and x_adv.data_ptr() != x.data_ptr()


def _mixed_state(model):
    model.train()
    model.features[1].eval()  # a submodule in a different mode than its parent
    params = list(model.parameters())
    params[0].requires_grad_(False)
    return snapshot(model)


@pytest.mark.parametrize("name", _names())
def test_restores_modes_and_requires_grad(name, data):
    model = trained_cnn(steps=1)
    before = _mixed_state(model)
    seen = []
    model.head.register_forward_pre_hook(lambda m, i: seen.append(
        (m.training, any(p.requires_grad for p in model.parameters()))))
    x, y = data
    _run(name, model, x, y)
    assert snapshot(model) == before
    if ATTACKS.get(name).model_role == "classifier":  # during the attack: eval, frozen
        assert seen and not any(t or r for t, r in seen)


@pytest.mark.parametrize("name", _names())
def test_restores_after_an_exception_in_the_model(name, data):
    inner = trained_cnn(steps=1)
    before = _mixed_state(inner)
    target = Counting(model_for(name, inner), fail_at=1)
    x, y = data
    with pytest.raises(RuntimeError, match="boom"):
        run_attack(name, target, x, y, **settings_for(name, 0.1))
    assert snapshot(inner) == before
