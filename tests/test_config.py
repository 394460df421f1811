import math

import pytest

from robustlab.config import from_dict, to_dict
from robustlab.errors import ConfigError, UnknownNameError
from robustlab.training import TrainConfig
from robustlab.training.optim import lr_factor


def test_from_dict_builds_and_round_trips():
    cfg = from_dict(TrainConfig, {"dataset": "synthetic", "model": "small-cnn", "lr": 1,
                                  "milestones": [0.3, 0.6], "subset": 0.3})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.milestones == (0.3, 0.6)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) 'lrr'.*valid:.*\blr\b"):
        from_dict(TrainConfig, {"dataset": "d", "model": "m", "lrr": 0.1})


@pytest.mark.parametrize("key,value,msg", [
    ("epochs", "ten", "integer"),
    ("epochs", 0, "epochs must be an integer >= 1"),
    ("lr", -1.0, "lr must be a finite number > 0"),
    ("lr", float("nan"), "lr must be a finite number > 0"),
    ("optimizer", "rmsprop", "one of 'sgd', 'adam'"),
    ("subset", 0, "subset must be a count"),
    ("subset", 1.5, "subset must be a count"),
    ("channels_last", "yes", "true or false"),
    ("milestones", [1.5], "fractions"),
])
def test_bad_values_are_refused(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(TrainConfig, {"dataset": "d", "model": "m", key: value})


def test_missing_required():
    with pytest.raises(ConfigError, match="missing setting"):
        from_dict(TrainConfig, {"dataset": "d"})


def test_cosine_schedule_endpoints_and_midpoint():
    cfg = TrainConfig(dataset="d", model="m", epochs=4, schedule="cosine")
    assert lr_factor(cfg, 0, 100) == pytest.approx(1.0)
    assert lr_factor(cfg, 50, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(cfg, 100, 100) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule_and_warmup():
    cfg = TrainConfig(dataset="d", model="m", epochs=10, schedule="step", milestones=(0.5, 0.75),
                      gamma=0.1)
    assert lr_factor(cfg, 10, 100) == 1.0
    assert lr_factor(cfg, 60, 100) == pytest.approx(0.1)
    assert lr_factor(cfg, 80, 100) == pytest.approx(0.01)
    warm = TrainConfig(dataset="d", model="m", epochs=10, schedule="constant", warmup_epochs=1)
    assert lr_factor(warm, 0, 100) == pytest.approx(0.1)
    assert lr_factor(warm, 9, 100) == pytest.approx(1.0)
    assert lr_factor(warm, 50, 100) == 1.0


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os
    import stat

    from robustlab._io import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".r.json.*"))  # no temporary file left behind


def test_method_args_typo_fails_when_the_config_is_built():
    with pytest.raises(ConfigError, match=r"'betta'.*valid:.*\bbeta\b"):
        TrainConfig(dataset="synthetic", model="small-cnn", method="trades",
                    method_args={"betta": 6})
    with pytest.raises(ConfigError, match=r"'betta'.*valid:.*\bbeta\b"):
        from_dict(TrainConfig, {"dataset": "d", "model": "m", "method": "trades",
                                "method_args": {"betta": 6}})
    cfg = TrainConfig(dataset="d", model="m", method="standard")
    with pytest.raises(ConfigError, match="'beta'"):  # replace() checks again
        cfg.replace(method_args={"beta": 6.0})
    with pytest.raises(UnknownNameError, match="unknown training method 'nope'.*standard"):
        TrainConfig(dataset="d", model="m", method="nope")


@pytest.mark.parametrize("method,args,msg", [
    ("trades", {"steps": "ten"}, r"method 'trades'\.steps must be an integer"),
    ("pgd", {"eps": 0}, "eps 0 is standard training; use --method standard"),
    ("pgd", {"eps": 8}, "did you mean 8/255"),
    ("transfer-adv", {}, "pass --source"),
    ("pgd", None, "must be a mapping"),
])
def test_method_args_are_checked_against_the_methods_args(method, args, msg):
    with pytest.raises(ConfigError, match=msg):
        TrainConfig(dataset="d", model="m", method=method, method_args=args)


def test_method_args_stay_the_mapping_given_in_config_json():
    args = {"eps": 8 / 255, "steps": 3}
    cfg = TrainConfig(dataset="d", model="m", method="pgd", method_args=args)
    assert to_dict(cfg)["method_args"] == args and from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_trainers_take_their_default_step_from_the_one_table(monkeypatch):
    import torch

    from robustlab.defaults import DEFAULT_STEP
    from robustlab.training import PurifierConfig
    from robustlab.training.classifier import adversarial

    pur = PurifierConfig(dataset="synthetic", extractor="x.safetensors", eps=0.08)
    assert pur.attack_step() == 0.08 / 8 and pur.replace(step_size=0.02).attack_step() == 0.02
    monkeypatch.setitem(DEFAULT_STEP, "feature-distortion", 0.5)
    monkeypatch.setitem(DEFAULT_STEP, "pgd", 0.5)
    assert pur.attack_step() == 0.04
    seen = {}

    def fake_pgd(model, x, y, **kw):
        seen.update(kw)
        return x

    monkeypatch.setattr(adversarial, "pgd", fake_pgd)
    method = adversarial.PGDTraining({"eps": 0.1}, None)
    method.loss(torch.nn.Flatten(), torch.rand(2, 3), torch.zeros(2, dtype=torch.long), None)
    assert seen["step_size"] == 0.05
