"""Threat geometry: ThreatModel validation, random start, ascent step, projection (golden)."""
from __future__ import annotations

import math

import pytest
import torch

from robustlab.attacks import ThreatModel, ascent_step, project, random_start
from robustlab.errors import ConfigError, RobustlabError, UnknownNameError


def test_threat_model_validates():
    assert ThreatModel("l2", 0.5).eps == 0.5
    with pytest.raises(UnknownNameError, match="linf, l2"):
        ThreatModel("l1", 0.1)
    for bad in (-0.1, float("nan"), float("inf"), "x"):
        with pytest.raises(ConfigError):
            ThreatModel("linf", bad)
    with pytest.raises(Exception):
        ThreatModel().eps = 1.0  # frozen


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_inside_ball_and_seeded(norm):
    x = torch.rand(64, 3, 4, 4)
    eps = 0.3
    a = random_start(x, eps, norm, torch.Generator().manual_seed(1))
    b = random_start(x, eps, norm, torch.Generator().manual_seed(1))
    c = random_start(x, eps, norm, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    d = (a - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-6).all()


def test_random_start_l2_is_uniform_in_the_ball():
    # Away from the [0, 1] walls: the radius of a uniform point of the d-ball has CDF r^d, so
    # P(r <= eps * 0.5^(1/d)) = 0.5 (a median test), and directions are symmetric.
    x = torch.full((4000, 1, 2, 2), 0.5)
    d = 4
    s = random_start(x, 0.2, "l2", torch.Generator().manual_seed(0)) - x
    r = s.flatten(1).norm(dim=1)
    assert abs((r <= 0.2 * 0.5 ** (1 / d)).float().mean().item() - 0.5) < 0.04
    assert s.flatten(1).mean(0).abs().max() < 0.01


def test_random_start_linf_is_uniform_per_pixel():
    x = torch.full((2000, 1, 2, 2), 0.5)
    s = random_start(x, 0.2, "linf", torch.Generator().manual_seed(0)) - x
    assert abs(s.mean().item()) < 0.005
    assert abs(s.var().item() - 0.2 ** 2 / 3) < 0.001  # variance of U(-eps, eps)


def test_ascent_step_golden():
    x = torch.zeros(2, 1, 1, 2)
    g = torch.tensor([[[[3.0, -4.0]]], [[[0.0, 0.0]]]])
    lin = ascent_step(x, g, 0.1, "linf")
    assert torch.equal(lin, torch.tensor([[[[0.1, -0.1]]], [[[0.0, 0.0]]]]))
    l2 = ascent_step(x, g, 0.5, "l2")  # 0.5 * (3, -4) / 5; the zero gradient gives no step
    assert torch.allclose(l2, torch.tensor([[[[0.3, -0.4]]], [[[0.0, 0.0]]]]))
    assert torch.isfinite(l2).all()


def test_project_l2_against_hand_formula():
    x = torch.full((3, 1, 2, 2), 0.5)
    delta = torch.tensor([[0.3, 0.4, 0.0, 0.0], [0.01, 0.0, 0.0, 0.0], [-0.6, 0.0, 0.0, 0.8]])
    out = project(x + delta.view(3, 1, 2, 2), x, 0.25, "l2")
    # hand: delta * min(1, eps/||delta||): norms 0.5, 0.01, 1.0
    want = torch.tensor([[0.15, 0.2, 0, 0], [0.01, 0, 0, 0], [-0.15, 0, 0, 0.2]])
    assert torch.allclose((out - x).view(3, 4), want, atol=1e-7)


def test_project_linf_and_clamp():
    x = torch.tensor([0.0, 0.5, 1.0, 0.95]).view(1, 1, 2, 2)
    x_adv = torch.tensor([-0.5, 0.9, 0.7, 1.5]).view(1, 1, 2, 2)
    out = project(x_adv, x, 0.2, "linf")
    assert torch.allclose(out.flatten(), torch.tensor([0.0, 0.7, 0.8, 1.0]))


def test_geometry_runs_in_float32_under_autocast():
    x = torch.rand(2, 3, 4, 4)
    g = torch.randn(2, 3, 4, 4).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for norm in ("linf", "l2"):
            s = ascent_step(x, g, 0.01, norm)
            p = project(s, x, 0.03, norm)
            assert s.dtype == torch.float32 and p.dtype == torch.float32
            assert random_start(x, 0.03, norm).dtype == torch.float32


def test_unknown_norm_everywhere():
    x = torch.rand(1, 1, 2, 2)
    for call in (lambda: random_start(x, 0.1, "l1"), lambda: ascent_step(x, x, 0.1, "L2"),
                 lambda: project(x, x, 0.1, "inf")):
        with pytest.raises(RobustlabError, match="linf, l2"):
            call()


def test_l2_ball_volume_radius_law():
    # With d = 1 the l2 ball is an interval: the start is uniform on [-eps, eps].
    x = torch.full((4000, 1, 1, 1), 0.5)
    s = random_start(x, 0.4, "l2", torch.Generator().manual_seed(5)) - x
    assert abs(s.abs().mean().item() - 0.2) < 0.01
    assert math.isclose(float(s.abs().max()), 0.4, abs_tol=0.01)


def test_default_step_is_one_table_read_by_the_attacks(monkeypatch):
    from robustlab.attacks import (ATTACKS, DEFAULT_STEP, describe, effective_settings,
                                   run_attack)
    from robustlab.defaults import default_step, step_text

    assert default_step("pgd", 8 / 255) == 2 / 255 and default_step("fast-fgsm", 0.1) == 0.125
    assert default_step("feature-distortion", 16 / 255) == 2 / 255
    assert [step_text(a) for a in ("pgd", "fast-fgsm", "feature-distortion", "fgsm")] == [
        "eps/4", "1.25 eps", "eps/8", "eps"]
    for name in ("pgd", "fast-fgsm", "feature-distortion"):
        assert step_text(name) in ATTACKS.help(name)
        assert step_text(name) in dict((k, h) for k, _, h in describe(name))["step_size"]
        assert effective_settings(name, eps=0.1)["step_size"] == default_step(name, 0.1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(0)), torch.arange(4) % 3
    for name in ("pgd", "fast-fgsm"):
        monkeypatch.setitem(DEFAULT_STEP, name, 0.5)
        assert effective_settings(name, eps=0.1)["step_size"] == 0.05
        by_default = run_attack(name, model, x, y, eps=0.1, seed=0)
        assert torch.equal(by_default, run_attack(name, model, x, y, eps=0.1, step_size=0.05,
                                                  seed=0))
