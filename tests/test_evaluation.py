"""The evaluation harness: per-sample scoring, threat models, sanity checks, sweeps, saved examples."""
import json

import pytest
import torch
from torch import nn

import robustlab as rl
from robustlab.errors import CheckpointError, ConfigError
from robustlab.evaluation import (EOT, THREAT_MODELS, AttackSpec, BPDAIdentity, KeepDropout,
                                  evaluate, load_adversarial, monotonic_warnings, save_adversarial,
                                  save_sweep, score_adversarial, sweep)
from robustlab.evaluation.sanity import threat_warnings
from robustlab.purifiers import Purified
from robustlab.training import TrainConfig, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    train(TrainConfig(dataset="synthetic", model="small-cnn", width=0.5, epochs=3, batch_size=32,
                      optimizer="adam", lr=0.003, val=0, seed=1), out, progress=False)
    return rl.models.load(out / "model.safetensors"), out / "model.safetensors"


@pytest.fixture(scope="module")
def test_set():
    return rl.data.load("synthetic", "test")


class Blur(nn.Module):
    """A tiny deterministic 'purifier' with dropout, for threat-model tests."""

    def __init__(self, p=0.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 0.0)
        with torch.no_grad():
            for c in range(3):
                self.conv.weight[c, c] = 1 / 9
        self.drop = nn.Dropout(p)
        self.in_channels = 3

    def forward(self, x):
        return self.drop(self.conv(x)).clamp(0, 1)


def test_robust_never_above_clean_and_worst_is_and(trained, test_set):
    model, _ = trained
    r = evaluate(model, test_set, ["fgsm", {"name": "pgd", "eps": 0.03, "steps": 5}], n=100)
    assert r.clean_acc > 0.5
    for key, acc in r.acc.items():
        assert acc <= r.clean_acc
        assert not (r.per_sample[key] & ~r.per_sample["clean"]).any()
    worst = r.per_sample["clean"] & r.per_sample[list(r.acc)[0]] & r.per_sample[list(r.acc)[1]]
    assert torch.equal(worst, r.per_sample["worst"]) and r.worst_acc == pytest.approx(worst.float().mean().item())
    assert r.acc["pgd[eps=0.03,steps=5]@white-box"] < r.clean_acc  # the attack does something


def test_same_seed_same_result_and_config_recorded(trained, test_set):
    model, _ = trained
    a = evaluate(model, test_set, [{"name": "pgd", "eps": 0.03, "steps": 3}], n=64, seed=5)
    b = evaluate(model, test_set, [{"name": "pgd", "eps": 0.03, "steps": 3}], n=64, seed=5)
    assert all(torch.equal(a.per_sample[k], b.per_sample[k]) for k in a.per_sample)
    d = a.to_dict()
    run = d["config"]["attacks"][0]
    assert d["config"]["seed"] == 5 and run["given"] == {"eps": 0.03, "steps": 3}
    assert run["settings"]["step_size"] == pytest.approx(0.0075)  # the default eps/4, as run
    assert run["settings"]["random_start"] is True and run["settings"]["early_stop"] is True
    json.dumps(d)


def test_white_box_on_purified_equals_attacking_the_composition(trained, test_set):
    model, _ = trained
    defended = Purified(Blur(), model)
    spec = [{"name": "pgd", "eps": 0.03, "steps": 3, "early_stop": False}]
    r = evaluate(defended, test_set, spec, n=32, seed=2, keep_adv=True)
    composed = nn.Sequential(defended.purifier, model)
    r2 = evaluate(composed, test_set, spec, n=32, seed=2, keep_adv=True)
    assert torch.equal(r.adv[list(r.adv)[0]], r2.adv[list(r2.adv)[0]])


def test_gray_box_and_bpda_need_a_defended_model(trained, test_set):
    model, _ = trained
    for threat in ("gray-box", "bpda"):
        with pytest.raises(ConfigError, match=f"{threat} threat model needs a defended model"):
            evaluate(model, test_set, [AttackSpec("fgsm", threat=threat)], n=8)
    with pytest.raises(ConfigError, match="needs a source model"):
        evaluate(model, test_set, [AttackSpec("fgsm", threat="transfer")], n=8)
    with pytest.raises(Exception, match="unknown threat model 'grey-box'.*gray-box"):
        evaluate(model, test_set, [AttackSpec("fgsm", threat="grey-box")], n=8)


def test_gray_box_crafts_on_the_bare_classifier(trained, test_set):
    model, _ = trained
    defended = Purified(Blur(), model)
    r = evaluate(defended, test_set, [AttackSpec("fgsm", {"eps": 0.03}, "gray-box")], n=32, keep_adv=True)
    x = test_set.images[:32].float() / 255
    expected = rl.attacks.fgsm(model, x, test_set.labels[:32], eps=0.03)
    assert torch.equal(r.adv[list(r.adv)[0]], expected)


def test_bpda_identity_forward_and_backward():
    pur = Blur()
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    out = BPDAIdentity(pur)(x)
    assert torch.allclose(out, pur(x))
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_keep_dropout_and_eot_average():
    pur = Blur(p=0.5).eval()
    x = torch.rand(4, 3, 8, 8)
    torch.manual_seed(0)
    a = KeepDropout(pur)(x)
    assert not torch.equal(a, pur(x))  # dropout was active in eval mode
    assert not pur.drop.training  # and its mode is put back

    class Noisy(nn.Module):
        def forward(self, x):
            return torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1) * 10

    eot = EOT(Noisy(), samples=3)
    logp = torch.log_softmax(Noisy()(x), 1)
    assert torch.allclose(eot(x), logp, atol=1e-6)  # deterministic model: EOT is the model
    with pytest.raises(ConfigError):
        EOT(Noisy(), samples=0)


def test_eot_and_bpda_run_on_a_stochastic_defence(trained, test_set):
    model, _ = trained
    defended = Purified(Blur(p=0.1), model)
    r = evaluate(defended, test_set, [AttackSpec("pgd", {"eps": 0.03, "steps": 2}, "eot"),
                                      AttackSpec("pgd", {"eps": 0.03, "steps": 2}, "bpda")],
                 n=16, eot_samples=2)
    assert set(r.acc) == {"pgd[eps=0.03,steps=2]@eot", "pgd[eps=0.03,steps=2]@bpda"}
    assert all(0 <= v <= 1 for v in r.acc.values())


def test_feature_distortion_threat_label_follows_the_extractor(trained, test_set):
    model, _ = trained
    own = rl.models.feature_extractor(model, 1)
    other = rl.models.feature_extractor(rl.models.create("small-cnn", num_classes=10, width=0.5), 1)
    fd = [{"name": "feature-distortion", "eps": 0.03, "steps": 2}]
    assert list(evaluate(model, test_set, fd, n=8, extractor=own).acc)[0].endswith("@white-box")
    assert list(evaluate(model, test_set, fd, n=8, extractor=other).acc)[0].endswith("@transfer")
    defended = Purified(Blur(), model)
    assert list(evaluate(defended, test_set, fd, n=8, extractor=own).acc)[0].endswith("@gray-box")
    with pytest.raises(ConfigError, match="needs a feature extractor"):
        evaluate(model, test_set, fd, n=8)


def test_sanity_checks_flag_masking():
    class Probs(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3 * 32 * 32, 10)

        def forward(self, x):
            return torch.softmax(self.lin(x.flatten(1)) * 100, 1)

    class Quantised(nn.Module):  # a non-differentiable step: zero input gradient everywhere
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3 * 32 * 32, 10)

        def forward(self, x):
            return self.lin((x * 4).round().detach().flatten(1))

    ds = rl.data.load("synthetic", "test")
    r = evaluate(Probs(), ds, n=16)
    assert [w["check"] for w in r.warnings] == ["outputs-probabilities"]
    r = evaluate(Quantised(), ds, n=16, sanity=True, check_large_eps=0.5)
    checks = {w["check"] for w in r.warnings}
    assert "zero-gradient" in checks
    r_ok = evaluate(rl.models.create("small-cnn", num_classes=10, width=0.5), ds, n=16, sanity=True)
    assert r_ok.warnings == []


def test_threat_and_monotonic_warnings():
    specs = [AttackSpec("pgd", {"eps": 0.1}), AttackSpec("pgd", {"eps": 0.1}, "transfer")]
    acc = {specs[0].key: 0.5, specs[1].key: 0.3}
    assert [w["check"] for w in threat_warnings(specs, acc, 1000)] == ["transfer-stronger-than-white-box"]
    assert threat_warnings(specs, {specs[0].key: 0.3, specs[1].key: 0.5}, 1000) == []
    # list-valued settings (autoattack's attacks=[...] from --attack-set) are compared too
    aa = [AttackSpec("autoattack", {"eps": 0.1, "attacks": ["apgd-ce"]}),
          AttackSpec("autoattack", {"eps": 0.1, "attacks": ["apgd-ce"]}, "bpda"),
          AttackSpec("autoattack", {"eps": 0.1, "attacks": ["apgd-t"]}, "transfer")]
    acc = {aa[0].key: 0.5, aa[1].key: 0.2, aa[2].key: 0.1}
    assert [w["attack"] for w in threat_warnings(aa, acc, 1000)] == [aa[1].key]
    rows = [{"model": "m", "attack": "pgd", "threat": "white-box", "param": "eps", "value": v, "acc": a}
            for v, a in [(0.0, 0.9), (0.1, 0.4), (0.2, 0.6)]]
    w = monotonic_warnings(rows)
    assert len(w) == 1 and w[0]["check"] == "accuracy-rises-with-eps"


def test_sweep_rows_files_and_eps_zero_is_clean(trained, test_set, tmp_path):
    model, _ = trained
    rows = sweep({"m": model}, test_set, "pgd", param="eps", values=[0, 0.02, 0.1],
                 settings={"steps": 3}, n=50)
    assert [r["value"] for r in rows] == [0, 0.02, 0.1]
    clean = evaluate(model, test_set, n=50).clean_acc
    assert rows[0]["acc"] == pytest.approx(clean)
    assert rows[2]["acc"] <= rows[1]["acc"] <= rows[0]["acc"]
    paths = save_sweep(rows, tmp_path / "s")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError):
        sweep({}, test_set, "pgd", param="eps", values=[0.1])


def test_saved_adversarial_round_trip_and_errors(trained, test_set, tmp_path):
    model, _ = trained
    r = evaluate(model, test_set, [{"name": "fgsm", "eps": 0.05}], n=40, keep_adv=True)
    x, y = test_set.images[:40].float() / 255, test_set.labels[:40]
    path = save_adversarial(tmp_path / "adv", r.adv[list(r.adv)[0]], y, x, label="fgsm",
                            eps=0.05, norm="linf")
    x_adv, y2, x2, side = load_adversarial(path)
    assert torch.equal(y2, y) and side["meta"]["label"] == "fgsm"
    flags = score_adversarial(model, x_adv, y2, x2)
    assert torch.equal(flags["robust"], r.per_sample[list(r.acc)[0]])
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cannot read adversarial examples"):
        load_adversarial(path)


def test_bad_inputs_fail_before_work(trained, test_set):
    model, _ = trained
    with pytest.raises(ConfigError, match="has no setting"):
        evaluate(model, test_set, [{"name": "pgd", "beta": 1.0}], n=8)
    with pytest.raises(Exception, match="unknown attack 'pdg'"):
        evaluate(model, test_set, ["pdg"], n=8)
    with pytest.raises(Exception, match="channels"):
        evaluate(model, (torch.rand(4, 1, 32, 32), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(Exception, match=r"\[0, 1\]"):
        evaluate(model, (torch.rand(4, 3, 32, 32) * 2, torch.zeros(4, dtype=torch.long)))
    with pytest.raises(Exception, match="labels must lie in"):
        evaluate(model, (torch.rand(4, 3, 32, 32), torch.full((4,), 12)))
    with pytest.raises(ConfigError, match="n must be >= 1"):
        evaluate(model, test_set, n=0)
    assert set(THREAT_MODELS.names()) == {"white-box", "transfer", "gray-box", "bpda", "eot"}


def test_every_attack_setting_is_checked_once_when_the_spec_is_built(trained, test_set,
                                                                     monkeypatch):
    """A bad setting fails as the AttackSpec is built, naming the attack, before any model runs;
    the batches then run from the checked settings, without run_attack checking them again."""
    model, _ = trained

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.calls = model, 0

        def forward(self, x):
            self.calls += 1
            return self.inner(x)

    bad = [({"steps": 0}, ConfigError, "attack 'pgd': steps must be an integer >= 1"),
           ({"restarts": 1.5}, ConfigError, "restarts"),
           ({"random_start": "no"}, ConfigError, "random_start must be True or False"),
           ({"norm": "l3"}, rl.errors.UnknownNameError, "linf, l2"),
           ({"objective": "nope"}, rl.errors.UnknownNameError, "attack 'pgd': unknown objective"),
           ({"objective": "feature", "early_stop": True}, ConfigError, "classifier objective"),
           ({"objective_kwargs": {"zz": 1}}, ConfigError, "zz"),
           ({"amp_dtype": "fp64"}, ConfigError, "amp_dtype"),
           ({"seed": -1}, ConfigError, "seed must be an integer >= 0"),
           ({"seed": 1, "generator": torch.Generator()}, ConfigError, "seed or generator")]
    for settings, err, msg in bad:
        with pytest.raises(err, match=msg):
            AttackSpec("pgd", settings)
        m = Counting()
        with pytest.raises(err, match=msg):
            evaluate(m, test_set, [{"name": "pgd", **settings}], n=8)
        assert m.calls == 0, settings
    with pytest.raises(ConfigError, match="attack 'fast-fgsm': step_size"):
        AttackSpec("fast-fgsm", {"step_size": 0.0})
    spec = AttackSpec("pgd", {"eps": 0.03, "steps": 2})
    assert (spec.typed.eps, spec.typed.steps, spec.typed.step_size) == (0.03, 2, None)
    calls = []
    real = rl.attacks.catalog.attack_settings
    monkeypatch.setattr(rl.attacks.catalog, "attack_settings",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    evaluate(model, test_set, [spec], n=40, batch_size=8)  # 5 batches
    assert len(calls) <= 1  # at most once, for the results' resolved settings; never per batch


def test_transfer_crafts_on_the_source_and_scores_the_target(trained, test_set):
    model, _ = trained
    source = rl.models.create("small-cnn", num_classes=10, width=0.5)
    r = evaluate(model, test_set, [AttackSpec("fgsm", {"eps": 0.05}, "transfer")], n=32,
                 source=source, keep_adv=True)
    x, y = test_set.images[:32].float() / 255, test_set.labels[:32]
    expected = rl.attacks.fgsm(source, x, y, eps=0.05)
    assert torch.equal(r.adv[list(r.adv)[0]], expected)
    with torch.no_grad():
        ok = (model(x).argmax(1) == y) & (model(expected).argmax(1) == y)
    assert torch.equal(r.per_sample[list(r.acc)[0]], ok)


def test_feature_distortion_under_several_threats_collapses_to_one(trained, test_set):
    model, _ = trained
    specs = [AttackSpec("feature-distortion", {"eps": 0.03, "steps": 2}, t)
             for t in ("gray-box", "bpda")]
    r = evaluate(Purified(Blur(), model), test_set, specs, n=8,
                 extractor=rl.models.feature_extractor(model, 1))
    assert list(r.acc) == ["feature-distortion[eps=0.03,steps=2]@gray-box"]
    assert r.per_sample["worst"].shape == (8,)


def test_eot_warns_on_a_deterministic_defence_and_keeps_global_rng(trained, test_set):
    model, _ = trained
    torch.manual_seed(123)
    before = torch.get_rng_state()
    r = evaluate(model, test_set, [AttackSpec("fgsm", {"eps": 0.03}, "eot")], n=8, eot_samples=2)
    assert torch.equal(before, torch.get_rng_state())
    assert "eot-on-deterministic-defence" in {w["check"] for w in r.warnings}
    r2 = evaluate(Purified(Blur(p=0.2), model), test_set,
                  [AttackSpec("fgsm", {"eps": 0.03}, "eot")], n=8, eot_samples=2)
    assert "eot-on-deterministic-defence" not in {w["check"] for w in r2.warnings}


def test_attack_alias_and_batch_size_check(trained, test_set):
    model, _ = trained
    r = evaluate(model, test_set, attack={"name": "fgsm", "eps": 0.03}, n=8)
    assert list(r.acc) == ["fgsm[eps=0.03]@white-box"]
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(model, test_set, n=8, batch_size=0)
    x = torch.rand(300, 3, 32, 32)
    y = torch.zeros(300, dtype=torch.long)
    y[-1] = 99  # a bad label in the last batch is still caught, before any work
    with pytest.raises(Exception, match="labels must lie in"):
        evaluate(model, (x, y), batch_size=64)


def test_sweep_over_two_attacks(trained, test_set):
    model, _ = trained
    rows = sweep({"m": model}, test_set, ["fgsm", "pgd"], param="eps", values=[0, 0.05],
                 attack_settings={"pgd": {"steps": 2}}, n=20)
    assert [(r["attack"], r["value"]) for r in rows] == [("fgsm", 0), ("fgsm", 0.05),
                                                         ("pgd", 0), ("pgd", 0.05)]


def test_autoattack_on_a_defended_pipeline(trained, test_set):
    pytest.importorskip("pyautoattack")
    model, _ = trained
    r = evaluate(Purified(Blur(), model), test_set,
                 [{"name": "autoattack", "eps": 0.03, "version": "custom",
                   "attacks": ("apgd-ce",), "n_iter": 2}], n=8)
    assert 0 <= list(r.acc.values())[0] <= r.clean_acc


# ------------------------------------------------- robust accuracy vs the reports' perturbed accuracy
class MeanRule(nn.Module):
    """A 2-class model whose answer is a rule on the mean pixel m: class 1 iff rule(m) > 0."""

    in_channels, num_classes = 1, 2

    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def forward(self, x):
        m = x.mean((1, 2, 3))  # (B,)
        return torch.stack([torch.zeros_like(m), 10 * self.rule(m)], 1)  # (B, 2) logits


# The source S answers 1 iff m > 0.5, so FGSM on S against label 1 lowers every pixel by eps.
# The target T answers 1 iff |m - 0.5| < 0.1: by hand, with y = 1 everywhere,
#   m       0.65  0.55  0.45  0.25  0.68
#   clean    no   yes   yes    no    no     -> clean 2/5
#   m-0.1   0.55  0.45  0.35  0.15  0.58
#   right   yes   yes    no    no   yes     -> perturbed 3/5, robust (both) 1/5
#   m-0.2   0.45  0.35  0.25  0.05  0.48
#   right   yes    no    no    no   yes     -> perturbed 2/5, robust 0/5
SOURCE = MeanRule(lambda m: m - 0.5)
TARGET = MeanRule(lambda m: 0.01 - (m - 0.5) ** 2)
MEANS = [0.65, 0.55, 0.45, 0.25, 0.68]


def mean_images():
    x = torch.tensor(MEANS).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()  # (5, 1, 4, 4)
    return x, torch.ones(len(MEANS), dtype=torch.long)


def test_perturbed_accuracy_can_exceed_clean_and_differs_from_robust():
    x, y = mean_images()
    attacks = [{"name": "fgsm", "eps": 0.1, "threat": "transfer"},
               {"name": "fgsm", "eps": 0.2, "threat": "transfer"}]
    r = evaluate(TARGET, (x, y), attacks, source=SOURCE)
    k1, k2 = "fgsm[eps=0.1]@transfer", "fgsm[eps=0.2]@transfer"
    assert r.clean_acc == pytest.approx(0.4)
    assert r.acc == r.robust_acc == pytest.approx({k1: 0.2, k2: 0.0})
    assert r.perturbed_acc == pytest.approx({k1: 0.6, k2: 0.4})  # above clean: the reports' metric
    assert r.worst_acc == r.worst_robust_acc == 0.0
    assert r.worst_perturbed_acc == pytest.approx(0.4)
    assert r.per_sample[k1].tolist() == [False, True, False, False, False]
    assert r.per_sample_perturbed[k1].tolist() == [True, True, False, False, True]
    assert r.per_sample_perturbed[k2].tolist() == [True, False, False, False, True]
    assert r.per_sample_perturbed["worst"].tolist() == [True, False, False, False, True]
    d = json.loads(json.dumps(r.to_dict()))  # what `robustlab evaluate --out` writes
    assert d["perturbed_acc"] == pytest.approx({k1: 0.6, k2: 0.4}) and d["acc"][k1] == pytest.approx(0.2)
    assert d["worst_perturbed_acc"] == pytest.approx(0.4) and d["worst_acc"] == 0.0
    assert d["per_sample_perturbed"][k1] == [1, 1, 0, 0, 1] and d["per_sample"][k1] == [0, 1, 0, 0, 0]
    assert set(d["metrics"]) >= {"acc", "perturbed_acc", "worst_perturbed_acc"}
    clean_only = evaluate(TARGET, (x, y))  # no attack: the clean input is the only one
    assert clean_only.perturbed_acc == {} and clean_only.worst_perturbed_acc == pytest.approx(0.4)


def test_sweep_rows_and_files_carry_both_accuracies(tmp_path):
    x, y = mean_images()
    rows = sweep({"t": TARGET}, (x, y), "fgsm", param="eps", values=[0, 0.1, 0.2],
                 threat="transfer", source=SOURCE)
    assert [r["acc"] for r in rows] == pytest.approx([0.4, 0.2, 0.0])  # robust; eps 0 is clean
    assert [r["perturbed_acc"] for r in rows] == pytest.approx([0.4, 0.6, 0.4])
    paths = save_sweep(rows, tmp_path / "s", metric="perturbed_acc")
    header, *lines = paths["csv"].read_text().splitlines()
    assert header.split(",") == ["model", "attack", "threat", "param", "value", "acc",
                                 "perturbed_acc", "n"]
    assert [float(line.split(",")[6]) for line in lines] == pytest.approx([0.4, 0.6, 0.4])
    with pytest.raises(ConfigError, match="metric must be one of"):
        save_sweep(rows, tmp_path / "bad", metric="accuracy")
    assert not (tmp_path / "bad.csv").exists()


def test_score_rows_carry_both_accuracies():
    from robustlab.commands.score import matrix, score_rows

    x, y = mean_images()
    x_adv = (x - 0.1).clamp(0, 1)  # what FGSM on SOURCE crafts at eps 0.1
    flags = score_adversarial(TARGET, x_adv, y, x)
    assert flags["perturbed"].tolist() == [True, True, False, False, True]
    assert flags["robust"].tolist() == [False, True, False, False, False]
    rows = score_rows({"t": TARGET, "s": SOURCE}, {"fgsm": (x_adv, y, x)})
    by_model = {r["model"]: r for r in rows}
    assert by_model["t"] == pytest.approx({"examples": "fgsm", "model": "t", "n": 5, "clean_acc": 0.4,
                                           "robust_acc": 0.2, "perturbed_acc": 0.6})
    # S: clean 0.65, 0.55, 0.68 right (m > 0.5); attacked only 0.55 and 0.58 stay above 0.5
    assert (by_model["s"]["clean_acc"], by_model["s"]["robust_acc"],
            by_model["s"]["perturbed_acc"]) == pytest.approx((0.6, 0.4, 0.4))
    assert "| fgsm | 60.00 | 40.00 |" in matrix(rows, ["t", "s"], ["fgsm"], "perturbed_acc")
