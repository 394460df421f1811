import math

import pytest

from robustlab.config import from_dict, to_dict
from robustlab.errors import ConfigError
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
