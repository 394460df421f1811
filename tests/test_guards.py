"""Guards of adversarial training: catastrophic overfitting (restore + stop), robust validation
with best.safetensors, resume of both, defaults, bad settings."""
import json
import warnings

import pytest
from conftest import interrupt_in_epoch
import torch
from safetensors.torch import load_file
from torch import nn

import robustlab.data as rl_data
from robustlab import models
from robustlab.errors import ConfigError
from robustlab.training import GuardConfig, TrainConfig, train
from robustlab.training.classifier import guards as guards_mod
from robustlab.training.classifier.adversarial import PGDTraining


def cfg(**kw):
    base = dict(dataset="synthetic", model="small-cnn", width=0.25, epochs=4, batch_size=16,
                optimizer="adam", lr=0.003, val=8, subset=32, seed=2, schedule="constant",
                method="pgd", method_args={"steps": 1}, guards={"overfit_n": 8, "steps": 1})
    base.update(kw)
    return TrainConfig(**base)


def lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


class Snapshots:
    """A user hook (runs after the guards): the weights each epoch ended with, before any restore."""

    def __init__(self):
        self.by_epoch = {}

    def __call__(self, run, epoch, metrics):
        self.by_epoch[epoch + 1] = {k: v.clone() for k, v in run.model.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def script_overfit(monkeypatch, accs):
    it = iter(accs)
    monkeypatch.setattr(guards_mod.OverfitGuard, "measure", lambda self, run: next(it))
    # FGSM never above PGD here: these tests script the between-epoch fall alone
    monkeypatch.setattr(guards_mod.OverfitGuard, "measure_fgsm", lambda self, run: 0.0)


def test_scripted_drop_restores_previous_weights_and_stops(tmp_path, monkeypatch):
    script_overfit(monkeypatch, [0.60, 0.55, 0.30, 0.9])  # epoch 3 falls 25 points
    snaps = Snapshots()
    with pytest.warns(RuntimeWarning, match="catastrophic overfitting in epoch 3.*0.550 to 0.300"
                      ".*restoring the weights of epoch 2"):
        final = train(cfg(guards={"robust_val": False}), tmp_path / "r", progress=False,
                      hooks=[snaps])
    got = lines(tmp_path / "r")
    assert [m["epoch"] for m in got] == [1, 2, 3]  # stopped
    assert [m["overfit_pgd_acc"] for m in got] == [0.60, 0.55, 0.30]
    assert [m.get("catastrophic_overfitting", False) for m in got] == [False, False, True]
    assert got[2]["restored_epoch"] == 2 and final == got[2]
    assert not same(snaps.by_epoch[3], snaps.by_epoch[2])  # epoch 3 did change the weights
    kept = load_file(str(tmp_path / "r/model.safetensors"))
    assert same({k: kept[k] for k in snaps.by_epoch[2]}, snaps.by_epoch[2])
    last = json.loads((tmp_path / "r/last.json").read_text())
    assert "restored the weights of epoch 2" in last["extra"]["stopped"]
    # a stopped run stays stopped: resume trains nothing and changes nothing
    again = train(cfg(guards={"robust_val": False}), tmp_path / "r", resume=True, progress=False)
    assert again == got[2] and lines(tmp_path / "r") == got
    assert same(load_file(str(tmp_path / "r/model.safetensors")), kept)


def test_drop_of_exactly_the_threshold_or_a_rise_is_not_overfitting(tmp_path, monkeypatch):
    script_overfit(monkeypatch, [0.5, 0.3, 0.9, 0.75])  # falls of 0.2 and 0.15: not > 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        train(cfg(guards={"robust_val": False, "overfit_drop": 0.2}), tmp_path / "r",
              progress=False)
    assert not any(m.get("catastrophic_overfitting") for m in lines(tmp_path / "r"))
    assert len(lines(tmp_path / "r")) == 4


def test_warn_action_marks_and_goes_on(tmp_path, monkeypatch):
    """overfit_action "warn" (the traffic-sign recipes: the collapse is the report's finding): the
    epoch is marked and warned about, and training runs to the last epoch with no restore."""
    script_overfit(monkeypatch, [0.6, 0.1, 0.1, 0.1])
    snaps = Snapshots()
    with pytest.warns(RuntimeWarning, match="catastrophic overfitting in epoch 2.*training goes on"):
        final = train(cfg(guards={"robust_val": False, "overfit_action": "warn"}), tmp_path / "r",
                      progress=False, hooks=[snaps])
    got = lines(tmp_path / "r")
    assert [m["epoch"] for m in got] == [1, 2, 3, 4] and final == got[-1]  # to the last epoch
    assert [m.get("catastrophic_overfitting", False) for m in got] == [False, True, False, False]
    assert not any("restored_epoch" in m for m in got)
    kept = load_file(str(tmp_path / "r/model.safetensors"))  # the last epoch's weights, not epoch 1's
    assert same({k: kept[k] for k in snaps.by_epoch[4]}, snaps.by_epoch[4])
    assert not same(snaps.by_epoch[4], snaps.by_epoch[1])
    assert "stopped" not in json.loads((tmp_path / "r/last.json").read_text())["extra"]


def scripted_val(monkeypatch, by_epoch):
    """robust_accuracy of the validation guard follows the epoch the method last started."""
    state = {}
    monkeypatch.setattr(PGDTraining, "start_epoch",
                        lambda self, epoch, model, gen: state.update(epoch=epoch))
    monkeypatch.setattr(guards_mod, "robust_accuracy", lambda *a, **k: by_epoch[state["epoch"]])


def test_best_checkpoint_tracks_best_robust_val_acc_and_survives_resume(tmp_path, monkeypatch):
    scripted_val(monkeypatch, {0: 0.3, 1: 0.5, 2: 0.4, 3: 0.45})
    c = cfg(guards={"overfit_check": False})
    snaps = Snapshots()
    restore = interrupt_in_epoch(monkeypatch, rl_data, "batches", 4, 1)
    with pytest.raises(KeyboardInterrupt):
        train(c, tmp_path / "r", progress=False, hooks=[snaps])
    restore()
    best = tmp_path / "r/best.safetensors"
    assert same(snaps.by_epoch[2], load_file(str(best)))
    assert json.loads((tmp_path / "r/best.json").read_text())["meta"]["metrics"]["epoch"] == 2
    train(c, tmp_path / "r", resume=True, progress=False)  # epoch 4: 0.45 < 0.5, best stays 2
    got = lines(tmp_path / "r")
    assert [m["val_robust_acc"] for m in got] == [0.3, 0.5, 0.4, 0.45]
    assert [m["best_epoch"] for m in got] == [1, 2, 2, 2]
    assert same(snaps.by_epoch[2], load_file(str(best)))


def test_robust_accuracy_of_a_constant_classifier_is_its_class_frequency():
    class Constant(nn.Module):  # predicts class 3 whatever the input: no attack can change it
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 10) + 0 * self.w * x.mean()
            logits[:, 3] = 1.0
            return logits

    ds = rl_data.load("synthetic", "test").select(list(range(40)))
    for attack in ("pgd", "fgsm"):
        acc = guards_mod.robust_accuracy(
            Constant(), ds, guards_mod.guard_attack(attack, eps=0.1, steps=2, seed=0),
            device=torch.device("cpu"), batch_size=16)
        assert acc == pytest.approx(float((ds.labels == 3).float().mean()))
    with pytest.raises(ValueError, match="pgd or fgsm"):
        guards_mod.guard_attack("cw", eps=0.1, steps=2, seed=0)


def test_real_guard_measures_and_defaults(tmp_path):
    std = train(cfg(method="standard", method_args={}, epochs=1, guards={}), tmp_path / "s",
                progress=False)
    assert "overfit_pgd_acc" not in std and "val_robust_acc" not in std  # off for standard
    adv = train(cfg(epochs=1, guards={"steps": 2}), tmp_path / "a", progress=False)
    assert 0 <= adv["overfit_pgd_acc"] <= 1 and 0 <= adv["val_robust_acc"] <= 1
    assert adv["guard_seconds"] >= 0 and adv["best_epoch"] == 1
    assert (tmp_path / "a/best.safetensors").exists()
    assert models.load(tmp_path / "a/best.safetensors").robustlab_meta["meta"]["metrics"]["epoch"] == 1
    with pytest.warns(RuntimeWarning, match="needs a validation split"):
        train(cfg(epochs=1, val=0, guards={"robust_val": True, "overfit_check": False}),
              tmp_path / "n", progress=False)


@pytest.mark.parametrize("kw,match", [
    ({"overfit_drop": 0.0}, "overfit_drop must be a finite number > 0"),
    ({"overfit_drop": 20.0}, "overfit_drop is a fall in accuracy in \\(0, 1\\]"),
    ({"overfit_n": 0}, "overfit_n must be an integer >= 1"),
    ({"eps": 8.0}, "pixel units"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"overfit_action": "panic"}, "'restore' or 'warn'"),
])
def test_bad_guard_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        GuardConfig(**kw)


def test_fgsm_far_above_pgd_marks_overfitting_within_the_first_epoch(tmp_path, monkeypatch):
    """No fall between epochs (robustness never formed), but FGSM 0.7 vs PGD 0.05: flagged."""
    monkeypatch.setattr(guards_mod.OverfitGuard, "measure", lambda self, run: 0.05)
    monkeypatch.setattr(guards_mod.OverfitGuard, "measure_fgsm", lambda self, run: 0.7)
    c = cfg(guards={"overfit_action": "warn", "robust_val": False})
    with pytest.warns(RuntimeWarning, match="FGSM accuracy 0.700 exceeds PGD accuracy 0.050"):
        train(c, tmp_path / "r", progress=False)
    got = lines(tmp_path / "r")
    assert all(m["catastrophic_overfitting"] for m in got)
    assert got[0]["overfit_fgsm_acc"] == 0.7 and got[0]["overfit_pgd_acc"] == 0.05
