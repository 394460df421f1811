"""Adversarial training methods: end to end, eps-ball, golden losses, resume, bad input."""
import json
import re

import pytest
from conftest import interrupt_in_epoch
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import robustlab.data as rl_data
from robustlab import models
from robustlab.attacks import pgd
from robustlab.cli import main
from robustlab.errors import CheckpointError, ConfigError, InputError
from robustlab.training import METHODS, TrainConfig, train
from robustlab.training.classifier.methods import MethodContext, build_method

ADV = ["fgsm", "fast-fgsm", "pgd", "trades", "transfer-adv"]


def cfg(**kw):
    base = dict(dataset="synthetic", model="small-cnn", width=0.25, epochs=1, batch_size=32,
                optimizer="adam", lr=0.003, val=16, subset=64, seed=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An untrained synthetic-shaped small-cnn checkpoint (a source only needs to be fixed)."""
    path = tmp_path_factory.mktemp("src") / "source.safetensors"
    torch.manual_seed(0)
    models.save(models.create("small-cnn", num_classes=10, in_channels=3, width=0.25), path,
                dataset="synthetic")
    return str(path)


def args_for(method, source, **kw):
    a = {"pgd": {"steps": 2}, "trades": {"steps": 2},
         "transfer-adv": {"source": source, "steps": 2}}.get(method, {})
    return {**a, **kw}


@pytest.mark.parametrize("method", ADV)
def test_every_method_trains_end_to_end(tmp_path, source, method):
    final = train(cfg(method=method, method_args=args_for(method, source)), tmp_path / "r",
                  progress=False)
    assert final["epoch"] == 1 and torch.isfinite(torch.tensor(final["train_loss"]))
    assert 0 <= final["val_robust_acc"] <= final["val_acc"] + 0.2  # guards on by default
    assert (tmp_path / "r/best.safetensors").exists()
    if method == "trades":
        assert {"loss_natural", "loss_robust"} <= set(final)


class Spy(nn.Module):
    """Wraps a model; records each forward's input and whether it ran in train mode."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x):
        req = all(p.requires_grad for p in self.inner.parameters())
        self.calls.append((x.detach().clone(), self.training, req))
        return self.inner(x)


def ctx(num_classes=10):
    ds = rl_data.load("synthetic", "train")
    return MethodContext(None, ds, num_classes, torch.device("cpu"))


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("method", ADV)
def test_training_inputs_lie_in_the_eps_ball(method, source):
    torch.manual_seed(0)
    spy = Spy(models.create("small-cnn", num_classes=10, in_channels=3, width=0.25)).train()
    m = build_method(method, args_for(method, source), ctx())
    x, y = batch()
    out = m.loss(spy, x, y, torch.Generator().manual_seed(3))
    out.loss.backward()
    eps = m.args.eps
    train_calls = [c for c in spy.calls if c[1]]
    attack_calls = [c for c in spy.calls if not c[1]]
    assert spy.training and all(p.requires_grad for p in spy.parameters())  # restored
    if method != "transfer-adv":  # the source, not the model, is attacked there
        assert attack_calls and not any(req for _, _, req in attack_calls)  # frozen during attack
    x_train = train_calls[-1][0]  # trades: (x, x_adv); the others: one pass on x_adv
    delta = (x_train - x).abs().amax(dim=(1, 2, 3))
    assert x_train.min() >= 0 and x_train.max() <= 1
    assert (delta <= eps + 1e-6).all()
    if method == "transfer-adv":  # mix 0.5: the first half is adversarial, the rest clean
        assert (delta[:4] > 0.5 * eps).all() and (delta[4:] == 0).all()
    else:
        assert (delta > 0.5 * eps).all()
    assert out.logits.shape == (8, 10)


class Linear(nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = nn.Parameter(w.clone()), nn.Parameter(b.clone())

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


def test_fgsm_training_step_equals_hand_written():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 2, 2, generator=g)  # (B, C, H, W), d = 4
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w, b = torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    eps, lr = 0.1, 0.5
    model = Linear(w, b)
    m = build_method("fgsm", {"eps": eps}, ctx(3))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    out = m.loss(model, x, y, torch.Generator())
    out.loss.backward()
    loss = out.loss.detach()
    opt.step()
    # by hand: d CE / d x = W^T (softmax(Wx + b) - onehot), one signed step, clip to [0, 1]
    onehot = F.one_hot(y, 3).float()
    xf = x.flatten(1)
    p = torch.softmax(xf @ w.T + b, 1)
    x_adv = (xf + eps * ((p - onehot) @ w).sign()).clamp(0, 1)
    p_adv = torch.softmax(x_adv @ w.T + b, 1)
    want_loss = -(p_adv.log() * onehot).sum(1).mean()
    grad_w = (p_adv - onehot).T @ x_adv / 6
    grad_b = (p_adv - onehot).mean(0)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert torch.allclose(model.w.detach(), w - lr * grad_w, atol=1e-6)
    assert torch.allclose(model.b.detach(), b - lr * grad_b, atol=1e-6)


def test_trades_loss_equals_hand_computed_ce_plus_beta_kl():
    torch.manual_seed(0)
    spy = Spy(models.create("small-cnn", num_classes=10, in_channels=3, width=0.25)).train()
    beta = 6.0
    m = build_method("trades", {"steps": 3, "beta": beta}, ctx())
    x, y = batch()
    out = m.loss(spy, x, y, torch.Generator().manual_seed(1))
    (xc, _, _), (xa, _, _) = [c for c in spy.calls if c[1]]
    assert torch.equal(xc, x)
    with torch.no_grad():  # small-cnn has no batch norm or dropout: train == eval outputs
        lp, lq = torch.log_softmax(spy.inner(xc), 1), torch.log_softmax(spy.inner(xa), 1)
    ce = -lp[torch.arange(8), y].mean()
    kl = (lp.exp() * (lp - lq)).sum() / 8  # batch-mean KL(p(x) || p(x'))
    assert float(out.stats["loss_natural"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(out.stats["loss_robust"]) == pytest.approx(float(kl), rel=1e-4, abs=1e-7)
    assert float(out.loss.detach()) == pytest.approx(float(ce + beta * kl), rel=1e-5)
    assert float(kl) > 0 and (xa - x).abs().max() <= 0.031 + 1e-6


def test_engine_init_is_the_first_iterate():
    """pgd(init=x0), one step: project(x0) + step * sign(grad at x0), projected (hand-written)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 2, 2, generator=g) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2, 0, 1])
    w, b = torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    model = Linear(w, b)
    x0 = x + 0.001 * torch.randn(x.shape, generator=g)
    eps, step = 0.05, 0.03
    out = pgd(model, x, y, eps=eps, step_size=step, steps=1, init=x0)
    start = torch.min(torch.max(x0, x - eps), x + eps).clamp(0, 1).flatten(1)
    p = torch.softmax(start @ w.T + b, 1)
    grad = (p - F.one_hot(y, 3).float()) @ w
    want = torch.min(torch.max(start + step * grad.sign(), x.flatten(1) - eps),
                     x.flatten(1) + eps).clamp(0, 1)
    assert torch.allclose(out.flatten(1), want, atol=1e-6)
    with pytest.raises(InputError, match="shape"):
        pgd(model, x, y, eps=eps, step_size=step, steps=1, init=x0[:2])
    with pytest.raises(ConfigError, match="restarts=1"):
        pgd(model, x, y, eps=eps, step_size=step, steps=1, init=x0, restarts=2)


@pytest.mark.parametrize("method,args", [("pgd", {"steps": 2}), ("trades", {"steps": 2}),
                                         ("fast-fgsm", {})])
def test_resume_mid_adversarial_training_equals_uninterrupted(tmp_path, monkeypatch, method, args):
    c = cfg(method=method, method_args=args, epochs=3, subset=48, batch_size=16, val=8,
            guards={"overfit_n": 8})
    train(c, tmp_path / "full", progress=False)
    restore = interrupt_in_epoch(monkeypatch, rl_data, "batches", 2, 1)
    with pytest.raises(KeyboardInterrupt):
        train(c, tmp_path / "cut", progress=False)
    restore()
    train(c, tmp_path / "cut", resume=True, progress=False)
    for name in ("model.safetensors", "best.safetensors"):
        wf, wc = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "cut" / name))
        assert all(torch.equal(wf[k], wc[k]) for k in wf), name

    def lines(run):
        out = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in m.items() if "seconds" not in k} for m in out]

    assert lines("full") == lines("cut")


@pytest.mark.parametrize("method,args,match", [
    ("transfer-adv", {}, "pass --source"),
    ("pgd", {"eps": 0.0}, "eps must be > 0"),
    ("pgd", {"eps": 8}, "pixel units.*8/255"),
    ("fgsm", {"eps": -0.1}, "eps must be > 0"),
    ("pgd", {"steps": 0}, "steps must be >= 1"),
    ("fgsm", {"steps": 5}, "exactly 1 step.*--method pgd"),
    ("fast-fgsm", {"steps": 3}, "exactly 1 step"),
    ("fgsm", {"step_size": 0.01}, "steps exactly eps.*fast-fgsm"),
    ("pgd", {"step_size": -1.0}, "step_size must be > 0"),
    ("trades", {"beta": 0.0}, "beta must be > 0"),
    ("pgd", {"beta": 6.0}, "unknown setting.*'beta'"),
    ("standard", {"eps": 0.1}, "unknown setting.*'eps'"),
    ("transfer-adv", {"source": "x", "mix": 1.5}, "mix.*\\(0, 1\\]"),
    ("transfer-adv", {"source": "x", "attack": "fgsm", "steps": 3}, "no setting.*steps"),
    ("transfer-adv", {"source": "x", "attack": "nope"}, "unknown attack 'nope'"),
])
def test_bad_method_settings_are_refused(method, args, match):
    with pytest.raises(Exception, match=match) as info:
        build_method(method, args, ctx())
    assert "RobustlabError" in [c.__name__ for c in type(info.value).__mro__]


@pytest.mark.parametrize("kw,match", [
    ({"num_classes": 5}, "predicts 5 classes but synthetic has 10"),
    ({"in_channels": 1}, "cannot take synthetic's 3x32x32 images"),
    ({"input_size": 28}, "cannot take synthetic's 3x32x32 images"),
])
def test_source_of_another_shape_or_class_count_is_refused(tmp_path, kw, match):
    kw = {"num_classes": 10, "in_channels": 3, **kw}
    path = tmp_path / "src.safetensors"
    models.save(models.create("small-cnn", width=0.25, **kw), path)
    with pytest.raises(InputError, match=match):
        build_method("transfer-adv", {"source": str(path)}, ctx())
    with pytest.raises(CheckpointError, match="--source: .*not found"):
        build_method("transfer-adv", {"source": str(tmp_path / "missing.safetensors")}, ctx())


def test_cli_flags_become_method_args(tmp_path, capsys):
    from robustlab.commands.train import build_config
    from robustlab.cli import build_parser

    args = build_parser().parse_args(["train", "--dataset", "synthetic", "--model", "small-cnn",
                                      "--method", "pgd", "--eps", "8/255", "--steps", "3",
                                      "--step-size", "2/255", "--out", str(tmp_path / "r")])
    c = build_config(args)
    assert c.method_args == {"eps": 8 / 255, "steps": 3, "step_size": 2 / 255}
    code = main(["train", "--dataset", "synthetic", "--model", "small-cnn", "--method",
                 "transfer-adv", "--out", str(tmp_path / "t")])
    assert code == 2 and "pass --source" in capsys.readouterr().err
    code = main(["train", "--dataset", "synthetic", "--model", "small-cnn", "--method", "pgd",
                 "--source", "x.safetensors", "--out", str(tmp_path / "u")])
    assert code == 2 and "unknown setting" in capsys.readouterr().err


def test_methods_are_registered_with_help():
    for name in ADV:
        assert name in METHODS.names() and METHODS.help(name)


# ------------------------------------------- transfer-adv: replace (default) or inject (SSR's "AT")
REPORT_PGD = {"attack": "pgd", "eps": 16 / 255, "step_size": 0.1, "steps": 20,
              "attack_args": {"random_start": False}}  # the SSR report's "AT PGD" attack


def report_pgd_on(source, x, y):
    """The report's PGD on the source, run directly (no random start: deterministic)."""
    return pgd(models.load(source), x, y, eps=16 / 255, step_size=0.1, steps=20,
               random_start=False)


def hand_ce(w, b, xs, ys):
    """Mean cross-entropy of the linear model (w, b) and its gradients, written out."""
    z = xs.flatten(1) @ w.T + b  # (N, K)
    p, onehot = torch.softmax(z, 1), F.one_hot(ys, w.shape[0]).float()
    loss = (torch.logsumexp(z, 1) - z[torch.arange(len(ys)), ys]).mean()
    return loss, (p - onehot).T @ xs.flatten(1) / len(ys), (p - onehot).mean(0)


@pytest.mark.parametrize("mode", ["inject", "replace", None])
def test_transfer_adv_trains_on_the_grown_or_the_mixed_batch(source, mode):
    g = torch.Generator().manual_seed(0)
    w, b = 0.01 * torch.randn(10, 3 * 32 * 32, generator=g), torch.randn(10, generator=g)
    x, y = batch(8)
    x_adv = report_pgd_on(source, x, y)
    assert (x_adv - x).abs().amax() <= 16 / 255 + 1e-6 and not torch.equal(x_adv, x)
    spy, lr = Spy(Linear(w, b)).train(), 0.5
    args = {"source": source, **REPORT_PGD, **({"mode": mode} if mode else {})}
    m = build_method("transfer-adv", args, ctx())
    out = m.loss(spy, x, y, torch.Generator().manual_seed(1))
    out.loss.backward()
    torch.optim.SGD(spy.parameters(), lr=lr).step()
    (seen, _, _), = [c for c in spy.calls if c[1]]  # one training pass
    if mode == "inject":  # B clean + B adversarial, the loss the mean over all 2B
        want_x, want_y = torch.cat([x, x_adv]), torch.cat([y, y])
        assert seen.shape[0] == 16 and set(out.stats) == {"train_adv_acc"}
    else:  # today's behaviour: the first mix=0.5 of the batch replaced, still B rows
        want_x, want_y = torch.cat([x_adv[:4], x[4:]]), y
        assert seen.shape[0] == 8 and out.stats == {}
    assert torch.allclose(seen, want_x, atol=1e-6)
    loss, grad_w, grad_b = hand_ce(w, b, want_x, want_y)
    assert float(out.loss.detach()) == pytest.approx(float(loss), rel=1e-5)
    assert torch.allclose(spy.inner.w.detach(), w - lr * grad_w, atol=1e-6)
    assert torch.allclose(spy.inner.b.detach(), b - lr * grad_b, atol=1e-6)
    assert out.logits.shape == (8, 10)  # train_acc: the batch's own rows


def test_transfer_adv_inject_with_a_mix_adds_that_fraction(source):
    spy = Spy(models.create("small-cnn", num_classes=10, in_channels=3, width=0.25)).train()
    m = build_method("transfer-adv", {"source": source, "steps": 2, "mode": "inject", "mix": 0.25},
                     ctx())
    x, y = batch(8)
    m.loss(spy, x, y, torch.Generator().manual_seed(1))
    (seen, _, _), = [c for c in spy.calls if c[1]]
    assert seen.shape[0] == 10 and torch.equal(seen[:8], x)  # 8 clean + adversaries of 2


@pytest.mark.parametrize("args,match", [
    ({"mode": "add"}, "mode must be 'replace'.*or 'inject'"),
    ({"mode": "inject", "mix": 0.0}, "mix.*\\(0, 1\\]"),
    ({"attack_args": {"random_strat": False}}, "no setting.*random_strat"),
    ({"attack": "fgsm", "attack_args": {"random_start": False}}, "no setting.*random_start"),
])
def test_transfer_adv_settings_are_refused_before_any_data_is_loaded(tmp_path, capsys, args, match):
    from robustlab.training.classifier.methods import check_method_args

    with pytest.raises(ConfigError, match=match):
        check_method_args("transfer-adv", {"source": "x", **args})
    sets = [a for k, v in args.items() for a in ("--set", f"method_args.{k}={json.dumps(v)}")]
    code = main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "no-data"),
                 "--model", "small-cnn", "--method", "transfer-adv", "--source", "x", *sets,
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and re.search(match, err), err
    assert not (tmp_path / "r").exists() and not (tmp_path / "no-data").exists()
