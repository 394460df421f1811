"""Bring your own model, from the command line: a torchvision resnet18 state_dict through
``--model m.pt --arch``, ``--model torchvision:resnet18 --weights``, ``import-model`` and a module
of the test's own through ``python:``, each giving the numbers of the same weights evaluated
directly with ``rl.evaluate``; training one epoch from an imported checkpoint, purifying it, and
``--format robustbench``."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from test_hostile_inputs import robustlab_cmd

import robustlab as rl

PGD = ["--attack", "pgd", "--eps", "2/255", "--steps", "2"]
EVAL = ["evaluate", "--n", "16", "--no-progress", *PGD]
ATTACKS = [{"name": "pgd", "eps": 2 / 255, "steps": 2}]
OWN = '''
import torch
from torch import nn


def build(num_classes=10, hidden=4):
    return nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(hidden, num_classes))
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """m.pt (a torchvision resnet18 state_dict), own.pt (the test module's network), the
    module on PYTHONPATH, and the networks themselves, in eval mode."""
    folder = tmp_path_factory.mktemp("byo")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(net.state_dict(), folder / "m.pt")
    (folder / "rl_cli_own.py").write_text(OWN)
    scope: dict = {}
    exec(OWN, scope)
    own = scope["build"]().eval()
    torch.save(own.state_dict(), folder / "own.pt")
    return folder, net, own


def run(work, *args: str, ok: bool = True):
    folder = work[0]
    env = {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    proc = robustlab_cmd(*args, cwd=folder, env=env, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def numbers(doc_or_result) -> dict:
    d = doc_or_result if isinstance(doc_or_result, dict) else json.loads(json.dumps(
        {"clean_acc": doc_or_result.clean_acc, "acc": doc_or_result.acc,
         "per_sample": {k: v.int().tolist() for k, v in doc_or_result.per_sample.items()}}))
    return {"clean_acc": d["clean_acc"], "acc": d["acc"], "per_sample": d["per_sample"]}


def reference(model, n: int = 16) -> dict:
    ds = rl.data.load("synthetic", "test")
    return numbers(rl.evaluate(model, ds, ATTACKS, n=n, seed=0, progress=False))


def test_evaluate_a_torchvision_state_dict_three_ways(work):
    folder, net, _ = work
    run(work, *EVAL, "--model", "m.pt", "--arch", "torchvision:resnet18", "--dataset",
        "synthetic", "--out", "a.json")
    run(work, *EVAL, "--model", "torchvision:resnet18", "--weights", "m.pt", "--dataset",
        "synthetic", "--out", "b.json")
    out = run(work, "import-model", "m.pt", "--arch", "torchvision:resnet18", "--dataset",
              "synthetic", "--out", "imported.safetensors")
    assert json.loads(out.stdout)["name"] == "torchvision:resnet18"
    run(work, *EVAL, "--model", "imported.safetensors", "--out", "c.json")  # dataset recorded
    expected = reference(net)
    for name in ("a", "b", "c"):
        doc = json.loads((folder / f"{name}.json").read_text())
        assert numbers(doc) == expected, name
    side = json.loads((folder / "imported.json").read_text())
    assert side["meta"]["imported_from"]["weights_sha256"] == rl._io.sha256_file(folder / "m.pt")
    assert side["meta"]["dataset"] == "synthetic"
    again = run(work, "import-model", "m.pt", "--arch", "torchvision:resnet18", "--out",
                "imported.safetensors", ok=False)
    assert "already exists; pass --overwrite" in again.stderr


def test_sweep_and_score_take_the_model_flags(work):
    folder, net, _ = work
    run(work, "sweep", "--model", "r18=torchvision:resnet18", "--weights", "m.pt", "--dataset",
        "synthetic", "--values", "0,2/255", "--steps", "2", "--n", "16", "--no-progress",
        "--out", "sw")
    rows = json.loads((folder / "sw.json").read_text())["rows"]
    ds = rl.data.load("synthetic", "test")
    from robustlab.evaluation import sweep

    want = sweep({"r18": net}, ds, "pgd", param="eps", values=[0, 2 / 255],
                 settings={"steps": 2}, n=16, seed=0)
    assert [(r["value"], r["acc"]) for r in rows] == [(r["value"], r["acc"]) for r in want]


def test_your_own_module_through_python_needs_trust(work):
    folder, _, own = work
    base = [*EVAL, "--dataset", "synthetic"]
    refused = run(work, *base, "--model", "python:rl_cli_own:build", "--weights", "own.pt",
                  ok=False)
    assert "--trust-code" in refused.stderr and refused.returncode == 2
    run(work, *base, "--model", "python:rl_cli_own:build", "--weights", "own.pt",
        "--trust-code", "--out", "own.json")
    run(work, "import-model", "own.pt", "--arch", "python:rl_cli_own:build", "--trust-code",
        "--dataset", "synthetic", "--out", "own-imported.safetensors")
    side = json.loads((folder / "own-imported.json").read_text())
    assert (side["name"], side["code"]) == ("python:rl_cli_own:build", "rl_cli_own")
    refused = run(work, *base, "--model", "own-imported.safetensors", ok=False)
    assert "runs only when asked" in refused.stderr
    run(work, *base, "--model", "own-imported.safetensors", "--trust-code", "--out", "own2.json")
    expected = reference(own)
    for name in ("own", "own2"):
        assert numbers(json.loads((folder / f"{name}.json").read_text())) == expected


def test_train_one_epoch_from_an_imported_checkpoint_and_purify_it(work):
    from robustlab.purifiers import Purified, create_purifier

    folder, net, _ = work
    if not (folder / "imported.safetensors").exists():
        run(work, "import-model", "m.pt", "--arch", "torchvision:resnet18", "--dataset",
            "synthetic", "--out", "imported.safetensors")
    out = run(work, "train", "--dataset", "synthetic", "--model", "torchvision:resnet18",
              "--init", "imported.safetensors", "--epochs", "1", "--subset", "32",
              "--batch-size", "16", "--val", "0", "--no-progress", "--out", "run")
    assert json.loads(out.stdout.splitlines()[-1])["epoch"] == 1
    trained = rl.models.load(folder / "run" / "model.safetensors")
    assert trained.robustlab_spec["name"] == "torchvision:resnet18"
    torch.manual_seed(3)
    purifier = create_purifier("unet-b", 3, width=0.125)
    rl.models.save(purifier, folder / "pur.safetensors", dataset="synthetic")
    run(work, *EVAL, "--n", "8", "--model", "imported.safetensors", "--purifier",
        "pur.safetensors", "--out", "purified.json")
    doc = json.loads((folder / "purified.json").read_text())
    assert numbers(doc) == reference(Purified(purifier.eval(), net), n=8)


def test_format_robustbench_writes_the_model_info_beside_the_results(work):
    folder, _, own = work
    aa = ["--attack", "autoattack", "--eps", "2/255", "--attack-set", "version=custom",
          "--attack-set", "attacks=[apgd-ce]", "--attack-set", "n_iter=2"]
    run(work, "evaluate", "--model", "python:rl_cli_own:build", "--weights", "own.pt",
        "--trust-code", "--dataset", "synthetic", "--n", "16", "--no-progress", *aa,
        "--format", "robustbench", "--out", "rb/eval.json")
    results = json.loads((folder / "rb" / "eval.json").read_text())
    info = json.loads((folder / "rb" / "eval.robustbench.json").read_text())
    key = next(iter(results["acc"]))
    assert info["clean_acc"] == f"{100 * results['clean_acc']:.2f}"
    assert info["autoattack_acc"] == f"{100 * results['acc'][key]:.2f}"
    assert (info["eps"], info["threat_model"], info["dataset"], info["architecture"]) == \
        ("2/255", "Linf", "synthetic", "python:rl_cli_own:build")
    assert info["number_forward_passes"] == 1
    assert info["robustlab"]["standard_autoattack"] is False and info["robustlab"]["n"] == 16
    assert {"link", "name", "authors", "venue", "reported", "additional_data"} <= info.keys()
    assert Path(info["robustlab"]["results"]) == Path("rb/eval.json")
