"""The traffic-sign recipes (seed 003) run as documented, end to end, on a GTSRB fixture with
random initial weights (--from-scratch): every config, then the stress command on the results."""
import json
import shlex
from pathlib import Path

import pytest
import yaml

from data_fixtures import write_gtsrb
from robustlab.cli import main

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "traffic-signs"
METHODS = ["standard", "fgsm", "fast-fgsm", "trades"]


def documented_command(name: str) -> list[str]:
    """The first `robustlab train` command line in the recipe's comment block."""
    for line in (RECIPES / f"{name}.yaml").read_text().splitlines():
        text = line.lstrip("# ").strip()
        if text.startswith("robustlab train") and text.endswith(name):
            return shlex.split(text)[1:]
    raise AssertionError(f"{name}.yaml documents no command line")


def test_recipes_hold_the_reports_settings():
    for name in METHODS:
        cfg = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
        assert (cfg["dataset"], cfg["model"], cfg["optimizer"], cfg["lr"], cfg["batch_size"]) == \
            ("gtsrb", "resnet18-imagenet", "adam", 0.0005, 128)
        assert cfg["model_kwargs"]["pretrained"] is True and cfg["method"] == name
    eps = {n: yaml.safe_load((RECIPES / f"{n}.yaml").read_text()).get("method_args", {})
           for n in METHODS}
    assert eps["fgsm"]["eps"] == pytest.approx(8 / 255) == eps["fast-fgsm"]["eps"]
    assert eps["trades"]["eps"] == pytest.approx(3 / 255)
    assert [yaml.safe_load((RECIPES / f"{n}.yaml").read_text())["epochs"] for n in METHODS] == \
        [10, 10, 10, 15]
    # FGSM and Fast-FGSM must be free to overfit catastrophically (the report's finding): the
    # guard warns and marks the epoch instead of restoring and stopping
    guards = {n: yaml.safe_load((RECIPES / f"{n}.yaml").read_text()).get("guards", {}) for n in METHODS}
    assert guards["fgsm"] == guards["fast-fgsm"] == {"overfit_action": "warn"}


def test_documented_commands_run_end_to_end_on_a_gtsrb_fixture(tmp_path, capsys):
    write_gtsrb(tmp_path / "data", n_per_class_train=1, n_test=12)
    runs = {}
    for name in METHODS:
        argv = documented_command(name)
        argv = [str(tmp_path / "data") if a == "DATA" else a for a in argv]
        argv = [str(REPO / a) if a.startswith("recipes/") else a for a in argv]
        out = tmp_path / "runs" / name
        argv[argv.index("--out") + 1] = str(out)
        # as documented, plus: random weights, a tiny subset, 1 epoch, cheap guards (CPU test)
        quick = ["--from-scratch", "--subset", "12", "--epochs", "1", "--no-progress",
                 "--set", "guards.overfit_n=6", "--set", "guards.steps=2"]
        quick += ["--steps", "2"] if name == "trades" else []  # 10 in the recipe
        assert main(argv + quick) == 0, name
        final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert final["epoch"] == 1
        saved = json.loads((out / "config.json").read_text())["config"]
        assert saved["model_kwargs"]["pretrained"] is False  # --from-scratch
        assert saved["model_kwargs"]["mean"] == [0.485, 0.456, 0.406]
        if name != "standard":
            assert "val_robust_acc" in final and (out / "best.safetensors").exists()
        if name in ("fgsm", "fast-fgsm"):  # the recipe's guards merge with --set guards.*
            assert saved["guards"]["overfit_action"] == "warn" and saved["guards"]["overfit_n"] == 6
        runs[name] = out / "model.safetensors"
    code = main(["stress", "--dataset", "gtsrb", "--data-root", str(tmp_path / "data"),
                 *[a for n, p in runs.items() for a in ("--model", f"{n}={p}")], "--n", "4",
                 "--eps", "0,8/255", "--pgd-steps", "1", "--steps", "1", "--out",
                 str(tmp_path / "stress"), "--no-progress"])
    assert code == 0
    table = (tmp_path / "stress" / "clean.md").read_text()
    assert all(f"| {n} | {n} |" in table for n in METHODS)
