"""The AutoAttack adapter (pyautoattack): few-class handling, seeding, missing-package error."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import importlib

aa_mod = importlib.import_module("robustlab.attacks.autoattack_adapter")
from robustlab.attacks import MissingDependency, autoattack
from robustlab.errors import ConfigError, InputError, RobustlabError
from test_attack_support import accuracy, make_data, trained_cnn

needs_aa = pytest.mark.skipif(importlib.util.find_spec("pyautoattack") is None,
                              reason="pyautoattack not installed")
CHEAP = dict(n_iter=3, n_queries=10)


def _k_class_model(k, seed=0, side=6):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, k)).eval()


def _data(model, n=6, side=6):
    x = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)  # clean accuracy 1
    return x, y


def test_missing_package_says_how_to_install(monkeypatch):
    def fail(name, *a, **k):
        raise ImportError(name)
    monkeypatch.setattr(aa_mod.importlib, "import_module", fail)
    x = torch.rand(2, 3, 6, 6)
    with pytest.raises(MissingDependency, match=r"pip install robustlab\[autoattack\]") as e:
        autoattack(_k_class_model(3), x, torch.tensor([0, 1]), eps=0.1)
    assert isinstance(e.value, RobustlabError) and isinstance(e.value, ImportError)


def test_bad_settings_fail_before_import_or_forward():
    m, x, y = _k_class_model(3), torch.rand(2, 3, 6, 6), torch.tensor([0, 1])
    for kw, msg in [(dict(version="fast"), "standard"), (dict(version="custom"), "attacks"),
                    (dict(version="custom", attacks=["apgd-x"]), "apgd-x"),
                    (dict(attacks=["apgd-ce"]), "custom"), (dict(seed=-1), "seed"),
                    (dict(n_iter=0), "n_iter"), (dict(eps=-1.0), "eps"), (dict(norm="l1"), "l2")]:
        kw = {"eps": 0.1, **kw}
        with pytest.raises(RobustlabError, match=msg):
            autoattack(m, x, y, **kw)
    with pytest.raises(ConfigError, match="labels"):
        autoattack(m, x, None, eps=0.1)


@needs_aa
def test_standard_version_on_four_classes_seeded_and_rng_neutral():
    model = trained_cnn()
    x, y = make_data(8, seed=3)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = autoattack(model, x, y, eps=0.1, seed=1, **CHEAP)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's global RNG is untouched
    b = autoattack(model, x, y, eps=0.1, seed=1, **CHEAP)
    assert torch.equal(a, b)
    assert (a - x).abs().max() <= 0.1 + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert accuracy(model, a, y) < accuracy(model, x, y)


@needs_aa
@pytest.mark.parametrize("k,replaced", [(2, "apgd-ce"), (3, "apgd-dlr")])
def test_few_classes_fall_back_with_a_warning(k, replaced):
    model = _k_class_model(k)
    x, y = _data(model)
    with pytest.warns(RuntimeWarning, match=f"running {replaced} instead"):
        out = autoattack(model, x, y, eps=0.3, norm="l2", **CHEAP)
    assert ((out - x).flatten(1).norm(dim=1) <= 0.3 + 1e-5).all()
    assert accuracy(model, out, y) <= 1.0 and torch.isfinite(out).all()


@needs_aa
def test_keeps_an_installed_trace_function():
    # pyautoattack's dynamic-defence check calls sys.settrace(None); coverage tools need theirs back
    import sys

    def tracer(frame, event, arg):
        return None
    model = _k_class_model(4)
    x, y = _data(model, n=2)
    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        autoattack(model, x, y, eps=0.1, version="custom", attacks=["apgd-ce"], n_iter=2)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(old)


@needs_aa
def test_labels_beyond_the_model_classes():
    model = _k_class_model(3)
    x, y = _data(model)
    with pytest.raises(InputError, match=r"\[0, 2\]"):
        autoattack(model, x, y + 3, eps=0.1, **CHEAP)


@needs_aa
def test_square_l2_is_skipped_on_tiny_images():
    model = _k_class_model(4, side=4)
    x, y = _data(model, side=4)
    with pytest.warns(RuntimeWarning, match="Square"):
        out = autoattack(model, x, y, eps=0.3, norm="l2", version="custom",
                         attacks=["apgd-ce", "square"], **CHEAP)
    assert ((out - x).flatten(1).norm(dim=1) <= 0.3 + 1e-5).all()
