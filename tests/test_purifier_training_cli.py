"""`robustlab train-purifier`: writes its run, parses budgets, protects an existing run."""
from __future__ import annotations

import json

import pytest
import torch

from robustlab import models
from robustlab.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    path = tmp_path_factory.mktemp("ext") / "vgg11.safetensors"
    torch.manual_seed(0)
    models.save(models.create("vgg11", num_classes=10, width=0.125), path, dataset="synthetic")
    return str(path)


def args(extractor, out, *extra):
    return ["train-purifier", "--dataset", "synthetic", "--extractor", extractor, "--width",
            "0.125", "--epochs", "1", "--subset", "32", "--steps", "2", "--val-n", "8",
            "--grid-n", "2", "--eps", "8/255", "--no-progress", "--out", str(out), *extra]


def test_cli_trains_and_protects_the_run(extractor, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(extractor, out)) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["epoch"] == 1 and printed["out"] == str(out)
    for name in ("purifier.safetensors", "purifier.json", "critic.safetensors", "metrics.jsonl",
                 "grid_epoch1.png", "last.json"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["kind"] == "train-purifier" and config["eps"] == pytest.approx(8 / 255)
    assert models.load(out / "purifier.safetensors").robustlab_spec["kind"] == "purifier"

    assert main(args(extractor, out)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(args(extractor, out, "--lr", "0.001", "--resume")) == 2
    assert "differs in: lr" in capsys.readouterr().err
    (out / "grid_epoch7.png").write_bytes(b"stale")  # from a longer earlier run
    (out / "notes.txt").write_text("mine")
    assert main(args(extractor, out, "--lr", "0.001", "--overwrite")) == 0
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == 0.001
    assert not (out / "grid_epoch7.png").exists() and (out / "grid_epoch1.png").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_config_file_set_and_errors(extractor, tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("arch: nrp\narch_kwargs: {n_blocks: 1}\nval_n: 0\n")
    out = tmp_path / "nrp"
    assert main(args(extractor, out, "--config", str(cfg), "--set", "width=0.0625")) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["arch"] == "nrp" and config["width"] == 0.0625
    assert models.load(out / "purifier.safetensors").robustlab_spec["name"] == "nrp"
    capsys.readouterr()
    assert main(["train-purifier", "--dataset", "synthetic", "--out", str(tmp_path / "x")]) == 2
    assert "--extractor is required" in capsys.readouterr().err
    assert main(args(extractor, tmp_path / "y", "--set", "nonsense=1")) == 2
    assert "unknown setting(s) 'nonsense'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args(extractor, tmp_path / "z", "--eps", "16/zero"))
