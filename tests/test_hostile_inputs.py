"""Every command, given each kind of bad input, as a hostile user would give it.

One table: each row runs ``robustlab ...`` in a fresh process and asserts a non-zero exit, exactly
one line on stderr that starts "robustlab: error:" and names the problem, no traceback, and no
file left behind that was not there before (in the case's own folder or in the shared fixtures).
A new command gets the same checks by adding rows.

Rows that prove *when* a command checks use data that cannot be loaded (``--data-root`` pointing
at a folder without the dataset): an error about the argument, not about the data, shows that the
argument was checked before any data was read.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import robustlab as rl

EMPTY = "{fx}/empty-root"  # a data root without any dataset: loading data there fails
ROOT = Path(__file__).resolve().parents[1]


def _checkpoints(fx: Path) -> None:
    from robustlab.purifiers import create_purifier

    torch.manual_seed(0)
    clf = rl.models.create("small-cnn", num_classes=10, in_channels=3)
    rl.models.save(clf, fx / "clf.safetensors", dataset="synthetic")
    rl.models.save(create_purifier("unet-b", 3, width=0.125), fx / "pur.safetensors",
                   dataset="synthetic")
    wide = json.loads((fx / "clf.json").read_text())
    shutil.copy(fx / "clf.safetensors", fx / "wide.safetensors")
    wide["kwargs"]["width"] = 4000
    (fx / "wide.json").write_text(json.dumps(wide))
    (fx / "empty-root").mkdir()
    (fx / "a-dir.yaml").mkdir()
    (fx / "latin1.yaml").write_bytes("epochs: 1 # caf\xe9\n".encode("latin-1"))
    (fx / "a-file").write_text("not a folder\n")


def _adversarial(fx: Path) -> None:
    from robustlab.evaluation import save_adversarial

    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    x_adv = (x + 0.05 * torch.randn(8, 3, 32, 32, generator=g).sign()).clamp(0, 1)
    y = torch.arange(8) % 10
    path = save_adversarial(fx / "adv.safetensors", x_adv, y, x, eps=0.1, norm="linf")
    # the same file rewritten as x_adv = 1 - x, its recorded eps 0.1 left as it was
    from safetensors.torch import save_file

    shutil.copy(path.with_suffix(".json"), fx / "flipped.json")
    save_file({"x_adv": 1 - x, "x": x, "y": y}, str(fx / "flipped.safetensors"))


def _run_dirs(fx: Path) -> None:
    """A finished one-epoch run, then damaged copies of it."""
    from robustlab.training import TrainConfig, train

    cfg = TrainConfig(dataset="synthetic", model="small-cnn", epochs=1, batch_size=16, val=0,
                      subset=32)
    train(cfg, fx / "run", progress=False)
    for name, damage in (("run-abc", {"epoch": "abc"}), ("run-99", {"epoch": 99})):
        shutil.copytree(fx / "run", fx / name)
        meta = json.loads((fx / name / "last.json").read_text())
        meta.update(damage)
        (fx / name / "last.json").write_text(json.dumps(meta))
    shutil.copytree(fx / "run", fx / "run-nostate")
    (fx / "run-nostate" / "last.json").unlink()


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    fx = tmp_path_factory.mktemp("fixtures")
    _checkpoints(fx)
    _adversarial(fx)
    _run_dirs(fx)
    return fx


TRAIN = ["train", "--dataset", "synthetic", "--model", "small-cnn", "--epochs", "1",
         "--subset", "32", "--batch-size", "16", "--val", "0", "--no-progress"]
EVAL = ["evaluate", "--model", "{fx}/clf.safetensors", "--n", "8", "--no-progress"]
PURIFIER = ["train-purifier", "--dataset", "synthetic", "--epochs", "1", "--subset", "16",
            "--no-progress", "--out", "o"]
CASES = {
    # train: names, values and files, all before any data is read
    "train unknown model": (["train", "--dataset", "cifar10", "--data-root", EMPTY, "--model",
                             "nope", "--out", "o"], "unknown model 'nope'"),
    "train unknown method": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY, "--method",
                              "nope", "--out", "o"], "unknown training method 'nope'"),
    "train method typo": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY, "--method",
                           "trades", "--set", "method_args.betta=3", "--out", "o"], "'betta'"),
    "train method typo lists the keys": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY,
                                          "--method", "trades", "--set", "method_args.betta=6",
                                          "--out", "o"],
                                         "'betta' for method 'trades'; valid: beta"),
    "train method eps 0": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY, "--method",
                            "pgd", "--eps", "0", "--out", "o"], "use --method standard"),
    "train eps > 1": ([*TRAIN, "--method", "pgd", "--eps", "8", "--out", "o"],
                      "did you mean 8/255?"),
    "train model_kwargs.num_classes": ([*TRAIN, "--set", "model_kwargs.num_classes=3", "--out",
                                        "o"], "model_kwargs.num_classes cannot be set"),
    "train config is a folder": ([*TRAIN, "--config", "{fx}/a-dir.yaml", "--out", "o"],
                                 "is not a file"),
    "train config not UTF-8": ([*TRAIN, "--config", "{fx}/latin1.yaml", "--out", "o"],
                               "is not a UTF-8 text file"),
    "train missing --init": ([*TRAIN, "--init", "{fx}/nothing.safetensors", "--out", "o"],
                             "--init: no checkpoint"),
    "train out under a file": ([*TRAIN, "--out", "{fx}/a-file/run"], "is a file"),
    "train resume epoch abc": ([*TRAIN, "--resume", "--out", "{fx}/run-abc"], "'abc'"),
    "train resume epoch 99": ([*TRAIN, "--resume", "--out", "{fx}/run-99"], "claims 99 epochs"),
    "train resume without state": ([*TRAIN, "--resume", "--out", "{fx}/run-nostate"],
                                   "no training state"),
    "train over a run": ([*TRAIN, "--out", "{fx}/run"], "already holds a run"),
    # pretrain
    "pretrain unknown model": (["pretrain", "--dataset", "cifar10", "--data-root", EMPTY,
                                "--model", "nope", "--out", "o"], "unknown model 'nope'"),
    "pretrain unknown method": (["pretrain", "--dataset", "cifar10", "--data-root", EMPTY,
                                 "--model", "small-cnn", "--method", "nope", "--out", "o"],
                                "unknown pre-training method 'nope'"),
    "pretrain eps > 1": (["pretrain", "--dataset", "synthetic", "--model", "small-cnn", "--eps",
                          "2", "--out", "o"], "did you mean 2/255?"),
    # compare-pretraining: every setting before hours of training
    "compare eps < 0": (["compare-pretraining", "--dataset", "cifar10", "--data-root", EMPTY,
                         "--model", "small-cnn", "--eps=-0.1", "--out", "o"], "eps must be"),
    "compare n 0": (["compare-pretraining", "--dataset", "cifar10", "--data-root", EMPTY,
                     "--model", "small-cnn", "--n", "0", "--out", "o"], "n must be an integer"),
    "compare unknown method": (["compare-pretraining", "--dataset", "cifar10", "--data-root",
                                EMPTY, "--model", "small-cnn", "--method", "nope", "--out", "o"],
                               "unknown training method 'nope'"),
    "compare unknown model": (["compare-pretraining", "--dataset", "cifar10", "--data-root", EMPTY,
                               "--model", "nope", "--out", "o"], "unknown model 'nope'"),
    # train-purifier
    "purifier missing extractor": ([*PURIFIER, "--extractor", "{fx}/nothing.safetensors"],
                                   "the extractor: checkpoint weights"),
    "purifier eps > 1": ([*PURIFIER, "--extractor", "{fx}/clf.safetensors", "--eps", "16"],
                         "did you mean 16/255?"),
    # evaluate
    "evaluate a purifier as --model": (["evaluate", "--model", "{fx}/pur.safetensors"],
                                       "is a purifier checkpoint"),
    "evaluate a purifier as --source": ([*EVAL, "--attack", "pgd", "--threat", "transfer",
                                         "--source", "{fx}/pur.safetensors"],
                                        "is a purifier checkpoint"),
    "evaluate eps > 1": ([*EVAL, "--attack", "pgd", "--eps", "8"], "did you mean 8/255?"),
    "evaluate n 0": ([*EVAL, "--n", "0"], "--n must be an integer >= 1"),
    "evaluate steps 0": ([*EVAL, "--dataset", "cifar10", "--data-root", EMPTY, "--attack", "pgd",
                          "--steps", "0"], "attack 'pgd': steps must be an integer >= 1"),
    "evaluate out is a folder": ([*EVAL, "--out", "{fx}/a-dir.yaml"], "is a directory"),
    "evaluate out under a file": ([*EVAL, "--out", "{fx}/a-file/eval.json"], "is a file"),
    "evaluate huge sidecar": (["evaluate", "--model", "{fx}/wide.safetensors"], "wide"),
    "evaluate unknown dataset": ([*EVAL, "--dataset", "nope"], "unknown dataset 'nope'"),
    # sweep and stress
    "sweep eps > 1": (["sweep", "--model", "{fx}/clf.safetensors", "--values", "0,8", "--out",
                       "s"], "did you mean 8/255?"),
    "sweep restarts 0": (["sweep", "--model", "{fx}/missing.safetensors", "--restarts", "0",
                          "--values", "0,0.1", "--out", "s"],
                         "attack 'pgd': restarts must be an integer >= 1"),
    "sweep out under a file": (["sweep", "--model", "{fx}/clf.safetensors", "--values", "0,0.1",
                                "--out", "{fx}/a-file/s"], "is a file"),
    "stress eps > 1": (["stress", "--model", "{fx}/clf.safetensors", "--eps", "0,8", "--out",
                        "s"], "did you mean 8/255?"),
    # reproduce
    "reproduce unknown recipe": (["reproduce", "nope", "--out", "o"], "unknown recipe 'nope'"),
    "reproduce unknown output": (["reproduce", "ssr-purifier", "--only", "table9", "--out", "o"],
                                 "has no output 'table9'"),
    "reproduce setting typo": (["reproduce", "traffic-signs", "--set", "n_evall=3", "--out", "o"],
                               "'n_evall'"),
    "reproduce paper without data": (["reproduce", "ssr-purifier", "--preset", "paper",
                                      "--data-root", EMPTY, "--out", "o"], "cifar10"),
    # score
    "score flipped examples": (["score", "--adv", "{fx}/flipped.safetensors", "--model",
                                "{fx}/clf.safetensors"], "does not match"),
    "score unknown file": (["score", "--adv", "{fx}/nothing.safetensors", "--model",
                            "{fx}/clf.safetensors"], "nothing.safetensors"),
}


def robustlab_cmd(*args: str, cwd: Path, env: dict | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "ROBUSTLAB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "robustlab.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.fixture(scope="module")
def outcomes(fx, tmp_path_factory):
    """Run every row (two at a time: two cores) and record what it did."""
    before_fx = files_under(fx)
    work = tmp_path_factory.mktemp("cases")

    def one(item):
        name, (argv, _) = item
        cwd = work / name.replace(" ", "_")
        cwd.mkdir()
        proc = robustlab_cmd(*[a.format(fx=fx) for a in argv], cwd=cwd)
        return name, proc, files_under(cwd)

    with ThreadPoolExecutor(2) as pool:
        results = {name: (proc, left) for name, proc, left in pool.map(one, CASES.items())}
    return results, before_fx, files_under(fx)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(case, outcomes):
    results, before_fx, after_fx = outcomes
    proc, left = results[case]
    expected = CASES[case][1]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, f"{case}: exit 0\n{proc.stdout}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, f"{case}: stderr has {len(lines)} lines:\n{proc.stderr}"
    assert lines[0].startswith("robustlab: error:"), lines[0]
    assert expected in lines[0], f"{case}: {expected!r} not in {lines[0]!r}"
    assert not left, f"{case} left files behind: {sorted(left)}"
    assert after_fx == before_fx, f"fixtures changed: {sorted(after_fx ^ before_fx)}"
