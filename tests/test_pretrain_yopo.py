"""YOPO as the adversary of contrastive pre-training (``--adversary yopo``): the views against a
PGD reference, in the ball, stronger than clean; runs through the API and the CLI, resumes, and
its bad settings."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import interrupt_in_epoch
from safetensors.torch import load_file

from robustlab import cli, models
from robustlab.attacks import pgd
from robustlab.attacks.objectives import nt_xent
from robustlab.errors import ConfigError
from robustlab.models.first_layer import find_first_layer
from robustlab.training.contrastive import trainer as ct
from robustlab.training.contrastive.methods import ContrastiveAttack, attack_views
from robustlab.training.contrastive.projection import ProjectionModel
from robustlab.training.contrastive.trainer import PretrainConfig, pretrain


def pcfg(**kw):
    base = dict(dataset="synthetic", model="small-cnn", width=0.25, method="a2s", epochs=1,
                batch_size=32, subset=64, optimizer="adam", lr=1e-3, seed=1, adversary="yopo",
                yopo_m=2, yopo_n=2)
    base.update(kw)
    return PretrainConfig(**base)


def _net_and_views(n=6):
    torch.manual_seed(0)
    net = ProjectionModel(models.create("small-cnn", 10, 3, width=0.25), proj_dim=16)
    g = torch.Generator().manual_seed(1)
    v1 = torch.rand(n, 3, 32, 32, generator=g)
    return net, v1, (v1 + 0.1 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1)


def _yopo(net, probe, m, n, eps=8 / 255, step=2 / 255):
    return ContrastiveAttack(eps=eps, step_size=step, adversary="yopo", yopo_m=m, yopo_n=n,
                             first_layer=find_first_layer(net, probe))


@pytest.mark.parametrize("mode", ["a2a", "a2s"])
def test_yopo_with_one_inner_update_is_pgd(mode):
    """With n = 1 every update uses the adjoint of the pass just made, so grad_eta (p . f0) is the
    input gradient itself: YOPO-m-1 takes PGD-m's steps from the same random start."""
    net, v1, v2 = _net_and_views()
    net.train()
    x, pair = (torch.cat([v1, v2]), None) if mode == "a2a" else (v1, v2)
    kw = {"x_pair": pair} if pair is not None else {}
    yopo = attack_views(net, x, _yopo(net, v1[:2], 3, 1), torch.Generator().manual_seed(4), **kw)
    ref = pgd(net, x, None, eps=8 / 255, step_size=2 / 255, steps=3, random_start=True,
              objective="nt-xent", objective_kwargs={"temperature": 0.5, **kw},
              generator=torch.Generator().manual_seed(4))
    same = (yopo - ref).abs() < 1e-6
    assert float(same.float().mean()) > 0.999  # a sign at a near-zero gradient may round apart
    assert net.training and all(p.requires_grad for p in net.parameters())  # modes put back


def test_yopo_views_stay_in_the_ball_and_raise_the_loss():
    net, v1, v2 = _net_and_views()
    eps = 8 / 255
    gen = torch.Generator().manual_seed(0)
    adv = attack_views(net, v1, _yopo(net, v1[:2], 3, 3), gen, x_pair=v2)
    assert adv.shape == v1.shape and (adv - v1).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    net.eval()
    with torch.no_grad():
        clean = nt_xent(net(v1), net(v2)).item()
        attacked = nt_xent(net(adv), net(v2)).item()
    assert attacked > clean
    again = attack_views(net, v1, _yopo(net, v1[:2], 3, 3), torch.Generator().manual_seed(0),
                         x_pair=v2)
    assert torch.equal(adv, again)  # deterministic under a seed


@pytest.mark.parametrize("method", ["a2a", "a2s"])
def test_pretrain_with_the_yopo_adversary_writes_a_run(tmp_path, method):
    final = pretrain(pcfg(method=method), tmp_path, progress=False)
    assert 0 < final["nt_xent"] < 10 and final["images"] == 64
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert (saved["adversary"], saved["yopo_m"], saved["yopo_n"]) == ("yopo", 2, 2)
    assert models.load(tmp_path / "encoder.safetensors")(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_dual_bn_with_the_yopo_adversary(tmp_path):
    cfg = pcfg(method="dual-bn", model="resnet18", width=0.125, subset=32, batch_size=16,
               yopo_m=1, yopo_n=2)
    final = pretrain(cfg, tmp_path, progress=False)
    assert {"nt_xent_clean", "nt_xent_adv"} <= set(final)


def test_yopo_adversary_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    c = pcfg(epochs=2, optimizer="sgd", lr=0.05)
    pretrain(c, tmp_path / "full", progress=False)
    restore = interrupt_in_epoch(monkeypatch, ct, "image_batches", 2, 1, counts=lambda a, k: 1)
    with pytest.raises(KeyboardInterrupt):
        pretrain(c, tmp_path / "cut", progress=False)
    restore()
    pretrain(c, tmp_path / "cut", resume=True, progress=False)
    a = load_file(str(tmp_path / "full/last.safetensors"))
    b = load_file(str(tmp_path / "cut/last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_default_adversary_is_pgd_and_yopo_differs(tmp_path):
    assert PretrainConfig(dataset="synthetic", model="small-cnn").adversary == "pgd"
    base = dict(adversary="pgd", steps=2)
    pretrain(pcfg(**base), tmp_path / "pgd", progress=False)
    pretrain(pcfg(), tmp_path / "yopo", progress=False)
    a = load_file(str(tmp_path / "pgd/encoder.safetensors"))
    b = load_file(str(tmp_path / "yopo/encoder.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kw, match", [
    ({"yopo_m": 0}, "yopo_m (YOPO's outer iterations: full passes per batch) must be an integer "
     ">= 1, got 0"),
    ({"yopo_n": 0}, "yopo_n (YOPO's inner updates through the first layer per pass) must be an "
     "integer >= 1, got 0"),
    ({"method": "simclr"}, "--adversary yopo attacks the views of a2a, a2s or dual-bn; method "
     "'simclr' trains on clean views only"),
    ({"adversary": "fgsm"}, "adversary"),
], ids=["m-0", "n-0", "simclr", "unknown"])
def test_bad_adversary_settings(kw, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        PretrainConfig.from_dict({"dataset": "synthetic", "model": "small-cnn",
                                  "adversary": "yopo", **kw})


def test_cli_takes_the_adversary(tmp_path, capsys):
    assert cli.main(["pretrain", "--dataset", "synthetic", "--model", "small-cnn", "--width",
                     "0.25", "--epochs", "1", "--batch-size", "32", "--subset", "64",
                     "--adversary", "yopo", "--yopo-m", "1", "--yopo-n", "2", "--no-progress",
                     "--out", str(tmp_path / "r")]) == 0
    saved = json.loads((tmp_path / "r/config.json").read_text())["config"]
    assert (saved["adversary"], saved["yopo_m"], saved["yopo_n"]) == ("yopo", 1, 2)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert "--adversary" in out and "--yopo-m" in out and "--yopo-n" in out
