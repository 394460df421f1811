"""The command line: files on disk after each command, one-line errors with non-zero exits."""
import json
import subprocess
import sys

import pytest
from conftest import free_port as _free_port

from robustlab.cli import main
from robustlab.commands import COMMANDS
from robustlab.commands.list_ import REGISTRIES

TRAIN = ["train", "--dataset", "synthetic", "--model", "small-cnn", "--width", "0.5", "--epochs", "2",
         "--optimizer", "adam", "--lr", "0.003", "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "std"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert name in text


def test_list_prints_every_registry_and_entries_resolve(capsys):
    import importlib

    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for kind, (module, attr) in REGISTRIES.items():
        assert f"{kind}:" in text
        reg = getattr(importlib.import_module(module), attr)
        for name in reg.names():
            assert name in text
            reg.get(name)  # every listed entry resolves


def test_train_writes_run_and_prints_metrics(run_dir, capsys):
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "model.json", "last.json"):
        assert (run_dir / name).exists()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_train_refuses_existing_run_and_resume_finishes(run_dir, capsys):
    assert main(TRAIN + ["--out", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(TRAIN + ["--out", str(run_dir), "--resume"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["epoch"] == 2


def test_train_config_file_and_set_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: synthetic\nmodel: small-cnn\nwidth: 0.25\nepochs: 1\nbatch_size: 64\n")
    assert main(["train", "--config", str(cfg), "--set", "lr=0.01", "--set", "optimizer=adam",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "r/config.json").read_text())["config"]
    assert saved["lr"] == 0.01 and saved["optimizer"] == "adam" and saved["batch_size"] == 64


@pytest.mark.parametrize("argv,message", [
    (["train", "--dataset", "synthetic", "--model", "resnet99", "--out", "X"], "unknown model 'resnet99'. Did you mean 'resnet18'"),
    (["train", "--dataset", "cifar100", "--model", "small-cnn", "--out", "X"], "unknown dataset 'cifar100'"),
    (["train", "--dataset", "synthetic", "--model", "small-cnn", "--set", "lrr=1", "--out", "X"], "unknown setting"),
    (["train", "--model", "small-cnn", "--out", "X"], "--dataset is required"),
])
def test_bad_train_input_is_one_line_error(argv, message, tmp_path, capsys):
    argv = [a if a != "X" else str(tmp_path / "x") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("robustlab: error:")


def test_evaluate_attacks_writes_json(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(run_dir / "model.safetensors"), "--dataset", "synthetic",
                 "--attack", "fgsm", "--attack", "pgd", "--eps", "0.03", "--steps", "5", "--n", "64",
                 "--seed", "3", "--sanity", "--out", str(out), "--save-adv", str(tmp_path / "adv"),
                 "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 64 and 0 <= res["worst_acc"] <= res["clean_acc"] <= 1
    assert set(res["acc"]) == {"fgsm[eps=0.03]@white-box", "pgd[eps=0.03,steps=5]@white-box"}
    assert set(res["perturbed_acc"]) == set(res["acc"]) == set(res["per_sample_perturbed"]) - {"worst"}
    assert all(res["perturbed_acc"][k] >= res["acc"][k] for k in res["acc"])
    assert res["worst_perturbed_acc"] >= res["worst_acc"]
    printed = json.loads(capsys.readouterr().out.split("\nrobustlab: warning")[0])
    assert set(printed) >= {"clean_acc", "acc", "worst_acc", "perturbed_acc", "worst_perturbed_acc"}
    assert res["config"]["seed"] == 3 and len(res["per_sample"]["clean"]) == 64
    assert res["provenance"]["robustlab"]
    assert (tmp_path / "adv/adv0.safetensors").exists() and (tmp_path / "adv/adv1.json").exists()
    capsys.readouterr()
    # the saved examples score the same on the model they were crafted on
    assert main(["evaluate", "--model", str(run_dir / "model.safetensors"), "--adv",
                 str(tmp_path / "adv/adv1.safetensors")]) == 0
    scored = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert scored["robust_acc"] == pytest.approx(res["acc"]["pgd[eps=0.03,steps=5]@white-box"])
    assert scored["perturbed_acc"] == pytest.approx(
        res["perturbed_acc"]["pgd[eps=0.03,steps=5]@white-box"])
    assert main(["score", "--adv", f"pgd={tmp_path / 'adv/adv1.safetensors'}", "--model",
                 f"m={run_dir / 'model.safetensors'}", "--out", str(tmp_path / "matrix")]) == 0
    printed = capsys.readouterr().out
    assert "| pgd |" in printed and "perturbed accuracy (%)" in printed
    assert "perturbed_acc" in (tmp_path / "matrix.csv").read_text().splitlines()[0]


def test_evaluate_clean_only_uses_the_recorded_dataset(run_dir, capsys):
    assert main(["evaluate", "--model", str(run_dir / "model.safetensors"), "--n", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 20


def test_sweep_writes_files(run_dir, tmp_path, capsys):
    prefix = tmp_path / "sw"
    assert main(["sweep", "--model", f"std={run_dir / 'model.safetensors'}", "--attack", "pgd",
                 "--param", "eps", "--values", "0,0.03,0.1", "--steps", "3", "--n", "40",
                 "--out", str(prefix), "--no-progress"]) == 0
    for ext in ("csv", "json", "png"):
        assert (tmp_path / f"sw.{ext}").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "| std |" in printed and "robust accuracy (%)" in printed and "perturbed accuracy" in printed
    assert "perturbed_acc" in (tmp_path / "sw.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("extra,message", [
    (["--attack", "pgd", "--steps", "0"], "steps must be an integer >= 1"),
    (["--attack", "fgsm", "--steps", "5"], "--steps is not a setting of fgsm"),
    (["--attack", "pgd", "--eps", "-1"], "eps"),
    (["--attack", "pgd", "--threat", "gray-box"], "needs a defended model"),
    (["--threat", "bpda"], "--threat needs at least one --attack"),
    (["--attack", "pgd", "--norm", "linf", "--attack-set", "beta=2"], "beta"),
    (["--dataset", "fashion-mnist", "--data-root", "/nonexistent"], ""),
])
def test_bad_evaluate_input(run_dir, extra, message, capsys):
    assert main(["evaluate", "--model", str(run_dir / "model.safetensors"), "--n", "8",
                 "--no-progress"] + extra) == 2
    assert message in capsys.readouterr().err


def test_evaluate_refuses_wrong_channels(run_dir, tmp_path, capsys):
    from data_fixtures import write_idx

    write_idx(tmp_path / "fm", 20, 20, name="fashion-mnist")
    assert main(["evaluate", "--model", str(run_dir / "model.safetensors"), "--dataset",
                 "fashion-mnist", "--data-root", str(tmp_path / "fm")]) == 2
    assert "1-channel images but" in capsys.readouterr().err


def test_missing_checkpoint_is_clear(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope.safetensors")]) == 2
    assert "nope" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "robustlab.cli", "list", "threat-models"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "bpda" in out.stdout


def test_evaluate_under_torchrun_matches_one_process(run_dir, tmp_path):
    """Two CPU processes (gloo) shard the test set and gather per-sample flags in order."""
    common = ["evaluate", "--model", str(run_dir / "model.safetensors"), "--attack", "fgsm",
              "--eps", "0.03", "--n", "50", "--batch-size", "16", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "one.json")]) == 0
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), "-m", "robustlab.cli", "--"] + common
                         + ["--out", str(tmp_path / "two.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert two["config"]["processes"] == 2 and two["n"] == 50
    assert two["per_sample"] == one["per_sample"]
    assert two["per_sample_perturbed"] == one["per_sample_perturbed"]  # gathered in order too
    assert two["perturbed_acc"] == one["perturbed_acc"]


def test_evaluate_a_purified_model_under_every_threat(run_dir, tmp_path, capsys):
    from robustlab import models
    from robustlab.purifiers import create_purifier

    pur = create_purifier("unet-b", 3, width=0.125)
    models.save(pur, tmp_path / "purifier.safetensors", dataset="synthetic")
    out = tmp_path / "defended.json"
    assert main(["evaluate", "--model", str(run_dir / "model.safetensors"), "--purifier",
                 str(tmp_path / "purifier.safetensors"), "--attack", "pgd", "--eps", "8/255",
                 "--steps", "2", "--threat", "gray-box", "--threat", "white-box", "--threat", "bpda",
                 "--threat", "eot", "--eot-samples", "2", "--n", "16", "--out", str(out),
                 "--no-progress"]) == 0
    res = json.loads(out.read_text())
    assert set(res["acc"]) == {f"pgd[eps=0.03137,steps=2]@{t}"
                               for t in ("gray-box", "white-box", "bpda", "eot")}
    assert res["purifier"].endswith("purifier.safetensors")


def test_training_state_that_does_not_match_its_tensors_is_refused(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "last.safetensors").write_bytes((copy / "model.safetensors").read_bytes())
    assert main(TRAIN + ["--out", str(copy), "--resume"]) == 2
    assert "does not belong to" in capsys.readouterr().err
