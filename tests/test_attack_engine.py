"""The PGD engine: golden FGSM, analytic optimum on a linear model, early stop, restarts, targeted,
AMP, and clear errors before any forward pass."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import (ATTACKS, attack_settings, describe, fast_fgsm, feature_distortion,
                               fgsm, pgd, run_attack)
from robustlab.errors import ConfigError, InputError, RobustlabError, UnknownNameError
from test_attack_support import Counting, accuracy, make_data, trained_cnn


@pytest.fixture(scope="module")
def model():
    return trained_cnn()


@pytest.fixture(scope="module")
def data():
    return make_data(24, seed=2)


def test_fgsm_equals_hand_written_sign_step(model, data):
    x, y = data
    eps = 0.05
    xr = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(xr), y, reduction="sum")  # model is in eval mode
    (g,) = torch.autograd.grad(loss, xr)
    want = (x + eps * g.sign()).clamp(0, 1)
    got = fgsm(model, x, y, eps=eps)
    assert torch.allclose(got, want, atol=1e-7)
    assert (got != x).float().mean() > 0.5  # it did move


def _linear(d, w_true_minus_other):
    m = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    with torch.no_grad():
        m[1].weight.copy_(torch.stack([w_true_minus_other, torch.zeros(d)]))
        m[1].bias.zero_()
    return m


def test_pgd_linf_reaches_the_analytic_optimum_of_a_linear_model():
    # For 2 classes CE is monotone in the margin (w_0 - w_1).x, so the worst case in the linf
    # ball is x - eps * sign(w_0 - w_1) (x kept away from the [0, 1] walls).
    g = torch.Generator().manual_seed(0)
    w = torch.randn(12, generator=g)
    model = _linear(12, w)
    x = 0.2 + 0.6 * torch.rand(5, 3, 2, 2, generator=g)
    y = torch.zeros(5, dtype=torch.long)
    eps = 0.1
    x_adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=10, generator=g)
    assert torch.allclose(x_adv, x - eps * w.sign().view(1, 3, 2, 2), atol=1e-6)


def test_pgd_l2_reaches_the_analytic_optimum_of_a_linear_model():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, generator=g)
    model = _linear(12, w)
    x = 0.3 + 0.4 * torch.rand(4, 3, 2, 2, generator=g)
    y = torch.zeros(4, dtype=torch.long)
    eps = 0.2
    x_adv = pgd(model, x, y, eps=eps, step_size=eps / 4, steps=6, norm="l2", random_start=False)
    want = x - eps * (w / w.norm()).view(1, 3, 2, 2)
    assert torch.allclose(x_adv, want, atol=1e-6)


def test_cw_and_targeted(model, data):
    x, y = data
    out = pgd(model, x, y, eps=0.15, step_size=0.03, steps=8, objective="cw", generator=_g())
    assert accuracy(model, out, y) < accuracy(model, x, y)
    target = (y + 1) % 4
    hit_clean = accuracy(model, x, target)
    out = pgd(model, x, target, eps=0.15, step_size=0.03, steps=8, targeted=True, generator=_g())
    assert accuracy(model, out, target) > hit_clean + 0.2


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_early_stop_never_weaker_and_cheaper(model, data):
    x, y = data
    kw = dict(eps=0.1, step_size=0.025, steps=8)
    full_m, early_m = Counting(model), Counting(model)
    full = pgd(full_m, x, y, generator=_g(), **kw)
    early = pgd(early_m, x, y, generator=_g(), early_stop=True, **kw)
    acc_full, acc_early = accuracy(model, full, y), accuracy(model, early, y)
    assert acc_early <= acc_full < 1.0
    assert early_m.samples < full_m.samples
    with torch.no_grad():  # returned iterates of fooled samples really are misclassified
        fooled = model(early).argmax(1) != y
    assert fooled.float().mean().item() == pytest.approx(1 - acc_early)


def test_early_stop_stops_calling_the_model_when_all_are_fooled(model, data):
    x, y = data
    m_full, m_early = Counting(model), Counting(model)
    kw = dict(eps=0.3, step_size=0.1, steps=10)
    pgd(m_full, x, y, generator=_g(), **kw)
    out = pgd(m_early, x, y, generator=_g(), early_stop=True, **kw)
    assert accuracy(model, out, y) == 0.0
    assert m_full.calls == 10 and m_early.calls < 10


def test_restarts_never_weaker_than_one_run(model, data):
    x, y = data
    kw = dict(eps=0.08, step_size=0.02, steps=4)
    one = pgd(model, x, y, generator=_g(5), **kw)
    three = pgd(model, x, y, generator=_g(5), restarts=3, **kw)
    assert accuracy(model, three, y) <= accuracy(model, one, y)
    es = pgd(model, x, y, generator=_g(5), restarts=3, early_stop=True, **kw)
    assert accuracy(model, es, y) <= accuracy(model, three, y)


def test_amp_autocast_forward_fp32_step(model, data):
    x, y = data
    seen = []
    model.head.register_forward_pre_hook(
        lambda m, i: seen.append(torch.is_autocast_enabled("cpu")))
    try:
        out = pgd(model, x, y, eps=0.1, step_size=0.025, steps=3, amp_dtype=torch.bfloat16,
                  generator=_g())
        out2 = pgd(model, x, y, eps=0.1, step_size=0.025, steps=3, amp_dtype="bf16",
                   generator=_g())
    finally:
        model.head._forward_pre_hooks.clear()
    assert seen and all(seen)
    assert out.dtype == torch.float32 and torch.equal(out, out2)
    assert (out - x).abs().amax() <= 0.1 + 1e-6 and accuracy(model, out, y) <= accuracy(model, x, y)
    fp32 = pgd(model, x, y, eps=0.1, step_size=0.025, steps=3, generator=_g())
    assert (out == fp32).float().mean() > 0.8  # bf16 gradients mostly agree in sign


def test_float64_inputs_keep_their_dtype():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    x = torch.rand(3, 3, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    out = pgd(model, x, y, eps=0.1, step_size=0.05, steps=2, generator=_g())
    assert out.dtype == torch.float64 and (out - x).abs().max() <= 0.1 + 1e-12


def test_nan_gradient_warns_and_stays_finite():
    class Sqrt(nn.Module):
        def forward(self, x):  # d/dx sqrt(x) is inf at 0
            return torch.stack([x.flatten(1).sqrt().sum(1), torch.zeros(x.shape[0])], 1)
    x = torch.zeros(2, 1, 2, 2)
    with pytest.warns(RuntimeWarning, match="NaN/inf"):
        out = pgd(Sqrt(), x, torch.tensor([1, 1]), eps=0.1, step_size=0.05, steps=2,
                  random_start=False)
    assert torch.isfinite(out).all()


def test_fast_fgsm_and_feature_distortion_defaults(model, data):
    x, y = data
    a = fast_fgsm(model, x, y, eps=0.1, generator=_g(7))
    b = pgd(model, x, y, eps=0.1, step_size=0.125, steps=1, generator=_g(7))
    assert torch.equal(a, b)
    fd = feature_distortion(model.features, x, generator=_g(7))
    ref = pgd(model.features, x, eps=16 / 255, step_size=2 / 255, steps=20, objective="feature",
              generator=_g(7))
    assert torch.equal(fd, ref)
    assert feature_distortion(model.features, x, generator=_g(7), steps=1).ne(x).any()


# ----- clear errors before any forward pass --------------------------------------------------

def _bad_cases(x, y):
    ok = dict(eps=0.1, step_size=0.02, steps=2)
    return [
        (dict(ok, eps=-0.1), ConfigError, "eps"),
        (dict(ok, eps=float("nan")), ConfigError, "eps"),
        (dict(ok, steps=0), ConfigError, "steps"),
        (dict(ok, steps=2.5), ConfigError, "steps"),
        (dict(ok, step_size=0.0), ConfigError, "step_size"),
        (dict(ok, step_size=-1), ConfigError, "step_size"),
        (dict(ok, norm="l3"), UnknownNameError, "linf, l2"),
        (dict(ok, objective="nope"), UnknownNameError, "ce"),
        (dict(ok, restarts=0), ConfigError, "restarts"),
        (dict(ok, amp_dtype=torch.float64), ConfigError, "amp_dtype"),
        (dict(ok, generator=3), ConfigError, "generator"),
        (dict(ok, early_stop=True, objective="feature"), ConfigError, "classifier objective"),
        (dict(ok, objective_kwargs=[1]), ConfigError, "objective_kwargs"),
        (dict(ok, objective_kwargs={"zz": 1}), ConfigError, "zz"),
        (dict(ok, _x=x * 2), InputError, r"\[0, 1\]"),
        (dict(ok, _x=x - 1), InputError, r"\[0, 1\]"),
        (dict(ok, _x=x[0]), InputError, "B, C, H, W"),
        (dict(ok, _x=(x * 255).to(torch.uint8)), InputError, "floating"),
        (dict(ok, _x=x.tolist()), InputError, "Tensor"),
        (dict(ok, _y=None), ConfigError, "labels"),
        (dict(ok, _y=y[:-1]), InputError, "labels"),
        (dict(ok, _y=y.float()), InputError, "integer"),
        (dict(ok, _y=y - 5), InputError, "labels"),
        (dict(ok, _y=None, objective="kl", targeted=True), ConfigError, "targeted"),
        (dict(ok, _y=None, objective="kl", early_stop=True), ConfigError, "early_stop"),
    ]


def test_bad_input_raises_before_any_forward(model, data):
    x, y = data
    for kw, err, msg in _bad_cases(x, y):
        m = Counting(model)
        xx, yy = kw.pop("_x", x), kw.pop("_y", y) if "_y" in kw else y
        with pytest.raises(err, match=msg):
            pgd(m, xx, yy, **kw)
        assert m.calls == 0, kw


def test_label_above_num_classes_raises_before_any_step(model, data):
    x, y = data
    m = Counting(model)
    with pytest.raises(InputError, match=r"\[0, 3\]"):
        pgd(m, x, y + 4, eps=0.1, step_size=0.02, steps=3)
    assert m.calls == 1  # the first forward tells the number of classes; no step was taken


def test_one_step_attacks_refuse_multi_step_settings(model, data):
    x, y = data
    with pytest.raises(ConfigError, match="steps"):
        fgsm(model, x, y, eps=0.1, steps=3)
    with pytest.raises(ConfigError, match="random_start"):
        fast_fgsm(model, x, y, eps=0.1, random_start=False)


def test_run_attack_validates_names_and_settings(model, data):
    x, y = data
    with pytest.raises(UnknownNameError, match="fgsm"):
        run_attack("pgdd", model, x, y)
    with pytest.raises(ConfigError, match="valid settings: eps"):
        run_attack("pgd", model, x, y, stepz=3)
    with pytest.raises(ConfigError, match="seed or generator"):
        run_attack("pgd", model, x, y, seed=1, generator=_g())
    with pytest.raises(ConfigError, match="eps"):
        run_attack("pgd", model, x, y, eps=-1)
    s = attack_settings("pgd", eps=0.1)
    assert s.step_size is None and s.steps == 10
    with pytest.raises(Exception):
        s.eps = 0.2  # frozen
    names = [row[0] for row in describe("feature-distortion")]
    assert names[:3] == ["eps", "step_size", "steps"]
    assert all(ATTACKS.help(n) for n in ATTACKS.names())


def test_run_attack_pgd_defaults_and_seed(model, data):
    x, y = data
    a = run_attack("pgd", model, x, y, eps=0.08, seed=4)
    b = pgd(model, x, y, eps=0.08, step_size=0.02, steps=10, generator=_g(4))
    assert torch.equal(a, b)
    fd = run_attack("feature-distortion", model.features, x, y, seed=4, steps=2)
    assert math.isclose(float((fd - x).abs().max()), 16 / 255, rel_tol=1e-4)
    assert isinstance(ConfigError("x"), RobustlabError)


def test_works_inside_no_grad_and_leaves_no_graph(model, data):
    x, y = data
    with torch.no_grad():
        out = pgd(model, x, y, eps=0.1, step_size=0.05, steps=2, generator=_g())
    ref = pgd(model, x, y, eps=0.1, step_size=0.05, steps=2, generator=_g())
    assert torch.equal(out, ref) and out.grad_fn is None and not out.requires_grad
    assert all(p.grad is None for p in model.parameters())  # input gradients only
