"""The traffic-sign recipe (seed 003): every preset is a complete, valid set of settings that
expands into a plan; the smoke preset runs end to end and a second run reruns nothing; the paper
preset's whole path runs on a GTSRB fixture (every size shrunk to one batch)."""
import json
from pathlib import Path

import pytest
import yaml

from data_fixtures import write_gtsrb
from robustlab.config import from_dict
from robustlab.errors import ConfigError
from robustlab.experiments import PRESETS, RECIPES, load_settings, plan_for, reproduce
from robustlab.experiments.recipe import RECIPE_DIR
from robustlab.experiments.traffic_signs import Settings, baseline_step

YAML = RECIPE_DIR / "traffic-signs.yaml"
RECIPE = RECIPES.get("traffic-signs")
E8 = 8 / 255
VERDICTS = {"holds", "does not hold", "cannot be judged here"}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_complete_and_expands_into_a_plan(preset):
    listed = yaml.safe_load(YAML.read_text())["presets"][preset]
    assert set(listed) == set(Settings.__dataclass_fields__)  # each preset lists every setting
    s = load_settings(RECIPE, preset)
    plan, outputs, steps = plan_for(RECIPE, s)
    assert outputs == ["fig1", "table1", "fig3", "fig4", "fig5", "fig6", "overfitting"]
    assert set(steps) == set(plan.steps) and len(set(plan.steps[n].id for n in steps)) == len(steps)
    cfg = {n: plan.steps[n].settings.get("config", {}) for n in steps}
    for key in ("fgsm", "fast-fgsm"):  # the collapse is the report's finding: shown, not prevented
        assert cfg[f"train-{key}"]["guards"]["overfit_action"] == "warn"
        assert cfg[f"train-{key}"]["method_args"] == {"eps": s.fgsm_eps}
    assert "overfit_action" not in cfg["train-trades"]["guards"]
    assert cfg["acl-finetune"]["init"].endswith("acl-pretrain/encoder.safetensors")
    # both ACL arms as compare-pretraining requires: same data, model, width, subset, val, seed
    from robustlab.training import TrainConfig
    from robustlab.training.contrastive.compare import _check_arms
    from robustlab.training.contrastive.config import PretrainConfig

    _check_arms(PretrainConfig.from_dict(cfg["acl-pretrain"]),
                from_dict(TrainConfig, cfg[baseline_step(s)]))
    for name in steps:  # every training config is a valid TrainConfig / PretrainConfig
        kind = plan.steps[name].kind
        if kind == "train":
            from_dict(TrainConfig, {**cfg[name], "init": None})
        elif kind == "pretrain":
            PretrainConfig.from_dict(cfg[name])


def test_the_paper_preset_holds_the_reports_settings():
    s = load_settings(RECIPE, "paper")
    assert (s.dataset, s.model, s.optimizer, s.lr, s.batch_size) == \
        ("gtsrb", "resnet18-imagenet", "adam", 0.0005, 128)
    assert s.model_kwargs["pretrained"] is True
    assert (s.epochs_fgsm, s.epochs_fast_fgsm, s.epochs_trades, s.pretrain_epochs) == \
        (10, 10, 15, 10)
    assert s.fgsm_eps == pytest.approx(E8) and s.trades_eps == pytest.approx(3 / 255)
    assert s.pretrain_method == "a2s" and s.n is None and s.n_clean is None
    assert [round(e * 255, 6) for e in s.stress_eps] == [0, 2, 4, 8, 12, 16]
    assert list(s.steps_values) == [1, 2, 5, 10, 20, 50]


def test_an_unknown_or_missing_key_is_refused(tmp_path):
    doc = yaml.safe_load(YAML.read_text())
    doc["presets"]["quick"]["epocs_fgsm"] = 3
    bad = tmp_path / "traffic-signs.yaml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="epocs_fgsm"):
        load_settings(RECIPE, "quick", path=bad)
    load_settings(RECIPE, "smoke", path=bad)  # the other presets are untouched
    del doc["presets"]["quick"]["epocs_fgsm"], doc["presets"]["quick"]["pgd_steps"]
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="missing setting.*pgd_steps"):
        load_settings(RECIPE, "quick", path=bad)
    with pytest.raises(ConfigError, match="stress_eps must hold fgsm_eps"):
        plan_for(RECIPE, load_settings(RECIPE, "smoke", overrides={"stress_eps": [0.0, 0.01]}))


def test_smoke_runs_end_to_end_and_a_second_run_reruns_nothing(tmp_path):
    out = tmp_path / "out"
    doc = reproduce("traffic-signs", "smoke", out, progress=False, say=lambda line: None)
    assert all(st["status"] == "ok" for st in doc["steps"].values()), \
        {n: st["error"] for n, st in doc["steps"].items() if st["status"] != "ok"}
    for name in ("results.json", "report.html", "tables/table1.md", "tables/table1.csv",
                 "tables/overfitting.md", "tables/overfitting.csv", "figures/fig1.png",
                 "figures/fig3.png", "figures/fig4.png", "figures/fig5.png", "figures/fig6.png"):
        assert (out / name).is_file(), name
    assert all(not str(v).startswith("could not") for v in doc["rendered"].values()), \
        doc["rendered"]
    table1 = (out / "tables/table1.md").read_text()
    for published in ("96.64", "97.49", "97.7", "80.5"):
        assert f"({published})" in table1
    assert "overfitting guard" in table1 and ("not flagged" in table1 or "flagged in" in table1)
    over = (out / "tables/overfitting.md").read_text()
    assert "perturbed inputs" in over and "robust" in over and "white-box" in over
    claims = json.loads((out / "results.json").read_text())["claims"]
    assert len(claims) >= 4 and {c["verdict"] for c in claims} <= VERDICTS
    assert all("SE" in c["why"] for c in claims)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "Table I" in html

    said: list[str] = []
    again = reproduce("traffic-signs", "smoke", out, progress=False, say=said.append)
    step_lines = [line for line in said if line.startswith("[")]
    assert len(step_lines) == len(doc["steps"]) and all(line.endswith(": cached")
                                                        for line in step_lines), said
    assert all(st["cached"] for st in again["steps"].values())


def test_paper_preset_runs_on_a_gtsrb_fixture(tmp_path):
    """The paper path (GTSRB, ImageNet ResNet18, every method, A2S) with every size at one batch
    and random initial weights (no ImageNet download)."""
    write_gtsrb(tmp_path / "data", n_per_class_train=1, n_test=8)
    tiny = {"model_kwargs": {"pretrained": False, "mean": [0.485, 0.456, 0.406],
                             "std": [0.229, 0.224, 0.225]},
            "subset": 16, "batch_size": 16, "epochs_none": 1, "epochs_fgsm": 1,
            "epochs_fast_fgsm": 1, "epochs_trades": 1, "trades_steps": 1, "guard_n": 4,
            "guard_steps": 1, "guard_val_n": 4, "pretrain_epochs": 1, "pretrain_batch_size": 8,
            "pretrain_steps": 1, "finetune_epochs": 1, "n_clean": 8, "n": 4, "fig1_n": 2,
            "stress_eps": [0.0, E8], "pgd_steps": 1, "steps_values": [1], "acl_eps": [0.0, E8]}
    out = tmp_path / "out"
    doc = reproduce("traffic-signs", "paper", out, data_root=str(tmp_path / "data"),
                    overrides=tiny, progress=False, say=lambda line: None)
    assert all(st["status"] == "ok" for st in doc["steps"].values()), \
        {n: st["error"] for n, st in doc["steps"].items() if st["status"] != "ok"}
    assert doc["preset"] == "paper" and doc["settings"]["dataset"] == "gtsrb"
    assert "acl-baseline" not in doc["steps"]  # same fine-tuning as the standard model: shared
    saved = json.loads(next((out / "steps").glob("train-fgsm-*/config.json")).read_text())
    assert saved["config"]["model"] == "resnet18-imagenet"
    assert saved["config"]["guards"]["overfit_action"] == "warn"
    assert all(Path(out / "figures" / f"{f}.png").is_file()
               for f in ("fig1", "fig3", "fig4", "fig5", "fig6"))
    assert (out / "tables/table1.md").is_file() and (out / "report.html").is_file()
