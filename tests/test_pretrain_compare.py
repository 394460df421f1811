"""`robustlab compare-pretraining`: both arms, one figure, CSV/JSON/Markdown, honest differences."""
import csv
import json

import pytest

from robustlab import cli
from robustlab.errors import ConfigError
from robustlab.training import TrainConfig
from robustlab.training.contrastive.compare import compare_pretraining, markdown_table
from robustlab.training.contrastive.config import PretrainConfig

ARGS = ["compare-pretraining", "--dataset", "synthetic", "--model", "small-cnn", "--width", "0.25",
        "--subset", "48", "--pretrain-epochs", "1", "--pretrain-batch-size", "16",
        "--pretrain-optimizer", "adam", "--pretrain-lr", "1e-3", "--pretrain-set", "steps=1",
        "--epochs", "1", "--batch-size", "16", "--eps", "0.02,0.1", "--pgd-steps", "2",
        "--n", "24", "--no-progress"]


def test_comparison_command_writes_curves_and_differences(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli.main(ARGS + ["--out", str(out)]) == 0
    for name in ("pgd_vs_eps.csv", "pgd_vs_eps.json", "pgd_vs_eps.png", "comparison.json",
                 "comparison.md", "pretrain/encoder.safetensors", "finetuned/model.safetensors",
                 "baseline/model.safetensors"):
        assert (out / name).exists(), name
    assert (out / "pgd_vs_eps.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((out / "pgd_vs_eps.csv").read_text().splitlines()))
    arms = sorted({r["model"] for r in rows})
    assert arms == ["a2s pre-training + standard", "no pre-training + standard"]
    assert sorted({float(r["value"]) for r in rows}) == [0.0, 0.02, 0.1]
    acc = {(r["model"], float(r["value"])): 100 * float(r["acc"]) for r in rows}
    summary = json.loads((out / "comparison.json").read_text())
    for line in summary["table"]:  # difference recomputed from the CSV
        want = acc[(arms[0], line["eps"])] - acc[(arms[1], line["eps"])]
        assert line["difference_points"] == pytest.approx(want, abs=0.01)
    assert summary["evaluation"]["n"] == 24 and summary["evaluation"]["threat"] == "white-box"
    assert summary["seconds"]["pretrain"] > 0
    ft = json.loads((out / "finetuned/config.json").read_text())["config"]
    base = json.loads((out / "baseline/config.json").read_text())["config"]
    assert ft["init"].endswith("encoder.safetensors") and base["init"] is None
    assert {k: v for k, v in ft.items() if k != "init"} == \
        {k: v for k, v in base.items() if k != "init"}  # the same budget
    printed = capsys.readouterr().out
    assert "difference (points)" in printed
    # re-running with --resume reuses the finished runs
    before = (out / "baseline/metrics.jsonl").read_text()
    assert cli.main(ARGS + ["--out", str(out), "--resume"]) == 0
    assert (out / "baseline/metrics.jsonl").read_text() == before


def test_comparison_refuses_unfair_configs(tmp_path):
    pre = PretrainConfig(dataset="synthetic", model="small-cnn", width=0.25)
    with pytest.raises(ConfigError, match="must agree on width"):
        compare_pretraining(pre, TrainConfig(dataset="synthetic", model="small-cnn", width=0.5),
                            tmp_path)
    with pytest.raises(ConfigError, match="must not set init"):
        compare_pretraining(pre, TrainConfig(dataset="synthetic", model="small-cnn", width=0.25,
                                             init="x.safetensors"), tmp_path)
    assert not any(tmp_path.iterdir())


def test_markdown_table_signs():
    table = [{"eps": 0.0, "pretrained": 80.0, "baseline": 82.5, "difference_points": -2.5},
             {"eps": 0.1, "pretrained": 30.0, "baseline": 20.0, "difference_points": 10.0}]
    md = markdown_table(table, "pre", "base").splitlines()
    assert md[2] == "| 0 (clean) | 80.00 | 82.50 | -2.50 |"
    assert md[3] == "| 0.1 | 30.00 | 20.00 | +10.00 |"
