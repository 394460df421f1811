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


def _own_data(fx: Path) -> None:
    """Image folders and .npz files that cannot load (your own data, issue 13)."""
    import numpy as np
    from PIL import Image
    from data_fixtures import write_image_folder, write_npz

    one = np.zeros((1, 3, 8, 8), dtype=np.uint8)
    (fx / "flat").mkdir()
    Image.fromarray(one[0].transpose(1, 2, 0)).save(fx / "flat" / "a.png")  # no class folder
    write_image_folder(fx / "empty-class", one, [0])
    (fx / "empty-class" / "1").mkdir()
    write_image_folder(fx / "broken", one, [0])
    (fx / "broken" / "0" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    write_image_folder(fx / "splits", one, [0], split="train")
    write_npz(fx / "labels.npz", np.zeros((4, 3, 8, 8), dtype=np.uint8), np.array([0, 1, 2, 5]),
              class_names=np.array(["a", "b", "c"]))
    torch.manual_seed(0)  # a classifier that records no dataset (no "evaluated on" warning)
    rl.models.save(rl.models.create("small-cnn", num_classes=3, in_channels=3),
                   fx / "own.safetensors")


def _own_models(fx: Path) -> None:
    """Models brought from elsewhere (issue 13): a state_dict, a pickled whole model, and a
    checkpoint of user code (python:) whose module does not exist."""
    torch.manual_seed(0)
    clf = rl.models.create("small-cnn", num_classes=10, in_channels=3)
    torch.save(clf.state_dict(), fx / "clf_sd.pt")
    torch.save(clf, fx / "whole.pt")
    doc = json.loads((fx / "clf.json").read_text())
    shutil.copy(fx / "clf.safetensors", fx / "pyclf.safetensors")
    (fx / "pyclf.json").write_text(json.dumps({**doc, "name": "python:rl_nowhere:build",
                                               "code": "rl_nowhere"}))


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    fx = tmp_path_factory.mktemp("fixtures")
    _checkpoints(fx)
    _adversarial(fx)
    _run_dirs(fx)
    _own_data(fx)
    _own_models(fx)
    return fx


TRAIN = ["train", "--dataset", "synthetic", "--model", "small-cnn", "--epochs", "1",
         "--subset", "32", "--batch-size", "16", "--val", "0", "--no-progress"]
EVAL = ["evaluate", "--model", "{fx}/clf.safetensors", "--n", "8", "--no-progress"]
OWN = ["evaluate", "--model", "{fx}/own.safetensors", "--n", "8", "--no-progress"]
FP16_ON_CPU = ("--amp fp16 needs a CUDA GPU (the device is cpu); on a CPU use --amp bf16, or "
               "--amp none")
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
    # Free-AT and YOPO (issue 15): counts, and options they cannot honour, before any data
    "train free replays 0": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY, "--method",
                              "free", "--replays", "0", "--out", "o"],
                             "method 'free': replays (the passes over each mini-batch) must be "
                             "an integer >= 1, got 0"),
    "train yopo m 0": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY, "--method", "yopo",
                        "--yopo-m", "0", "--out", "o"],
                       "method 'yopo': m (outer iterations, full passes per mini-batch) must be "
                       "an integer >= 1, got 0"),
    "train yopo n 0": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY, "--method", "yopo",
                        "--set", "method_args.n=0", "--out", "o"],
                       "method 'yopo': n (inner updates through the first layer per pass) must "
                       "be an integer >= 1, got 0"),
    "train free with fp16": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY, "--method",
                              "free", "--amp", "fp16", "--out", "o"],
                             "method 'free' cannot train with --amp fp16: the perturbation step "
                             "reads the loss-scaled gradient of every replay"),
    "train yopo compiled": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY, "--method",
                             "yopo", "--compile", "--out", "o"],
                            "method 'yopo' cannot train a compiled model (--compile)"),
    "train yopo unknown first layer": ([*TRAIN, "--method", "yopo", "--first-layer", "conv1",
                                        "--out", "o"],
                                       "method 'yopo': SmallCNN has no module 'conv1' to split "
                                       "after; its modules with weights: blocks.0.0, blocks.0.2"),
    # pretrain
    "pretrain unknown model": (["pretrain", "--dataset", "cifar10", "--data-root", EMPTY,
                                "--model", "nope", "--out", "o"], "unknown model 'nope'"),
    "pretrain unknown method": (["pretrain", "--dataset", "cifar10", "--data-root", EMPTY,
                                 "--model", "small-cnn", "--method", "nope", "--out", "o"],
                                "unknown pre-training method 'nope'"),
    "pretrain yopo m 0": (["pretrain", "--dataset", "cifar10", "--data-root", EMPTY, "--model",
                           "small-cnn", "--adversary", "yopo", "--yopo-m", "0", "--out", "o"],
                          "yopo_m (YOPO's outer iterations: full passes per batch) must be an "
                          "integer >= 1, got 0"),
    "pretrain yopo with simclr": (["pretrain", "--dataset", "cifar10", "--data-root", EMPTY,
                                   "--model", "small-cnn", "--method", "simclr", "--adversary",
                                   "yopo", "--out", "o"],
                                  "--adversary yopo attacks the views of a2a, a2s or dual-bn"),
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
    # your own data (issue 13): folders and .npz files that cannot load, options that do not fit
    "folder without class folders": ([*OWN, "--dataset", "folder", "--data-root", "{fx}/flat"],
                                     "flat has no class sub-folders (it holds 1 images directly"),
    "folder with an empty class": ([*OWN, "--dataset", "folder", "--data-root",
                                    "{fx}/empty-class"], "empty-class/1 holds no images"),
    "folder with an unreadable image": ([*OWN, "--dataset", "folder", "--data-root", "{fx}/broken",
                                         "--split", "train"],  # 2 images: all in train
                                        "broken/0/bad.png is not a readable image"),
    "folder with an empty test split": ([*OWN, "--dataset", "folder", "--data-root", "{fx}/broken"],
                                        "broken is empty: the split sizes give it no image"),
    "folder without --data-root": ([*OWN, "--dataset", "folder"],
                                   "the folder dataset needs --data-root DIR"),
    "folder split sizes with split folders": ([*OWN, "--dataset", "folder", "--data-root",
                                               "{fx}/splits", "--split-sizes", "0.8,0.1,0.1"],
                                              "split sizes apply only to a folder without them"),
    "folder missing split": ([*OWN, "--dataset", "folder", "--data-root", "{fx}/splits"],
                             "has no test/ sub-folder (it has train/)"),
    "npz labels outside the classes": ([*OWN, "--dataset", "npz", "--data-root",
                                        "{fx}/labels.npz"],
                                       "labels go up to 5 but class_names names 3 classes"),
    "evaluate split sizes on a built-in set": ([*EVAL, "--split-sizes", "0.5,0.2,0.3"],
                                               "does not apply to synthetic"),
    "evaluate cache dir on a built-in set": ([*EVAL, "--cache-dir", "c"],
                                             "--cache-dir (cache_dir) does not apply to synthetic"),
    "train channels 2": ([*TRAIN, "--channels", "2", "--out", "o"], "channels must be 1 or 3"),
    "train split sizes over 1": ([*TRAIN, "--dataset", "folder", "--data-root", EMPTY,
                                  "--split-sizes", "0.8,0.3,0.1", "--out", "o"],
                                 "sum to at most 1"),
    "train val split of a built-in set": ([*TRAIN, "--val", "split", "--out", "o"],
                                          "synthetic has no val split"),
    "pretrain channels 2": (["pretrain", "--dataset", "synthetic", "--model", "small-cnn",
                             "--channels", "2", "--out", "o"], "channels must be 1 or 3"),
    "purifier split sizes over 1": ([*PURIFIER, "--extractor", "{fx}/clf.safetensors",
                                     "--split-sizes", "1,0.5,0.5"], "sum to at most 1"),
    # your own model (issue 13): state_dicts, pickles, torchvision/timm/python: sources
    "evaluate state_dict without --arch": (["evaluate", "--model", "{fx}/clf_sd.pt"],
                                           "plain state_dict file (no robustlab sidecar): name "
                                           "its network with --arch NAME"),
    "evaluate pickled whole model": (["evaluate", "--model", "{fx}/whole.pt", "--arch",
                                      "small-cnn"], "holds a pickled Python object (a whole "
                                      "model?), not a state_dict; robustlab loads weights only"),
    "evaluate state_dict of another arch": (["evaluate", "--model", "{fx}/clf_sd.pt", "--arch",
                                             "vgg11", "--num-classes", "10"],
                                            "does not fit vgg11 (num_classes=10, in_channels=3): "
                                            "missing keys (48): blocks.0.1.bias"),
    "evaluate state_dict class count": (["evaluate", "--model", "{fx}/clf_sd.pt", "--arch",
                                         "small-cnn", "--num-classes", "7"],
                                        "shape mismatches (2): head.4.bias: file (10,) vs "
                                        "model (7,), head.4.weight: file (10, 200) vs model "
                                        "(7, 200)"),
    "evaluate an architecture name": (["evaluate", "--model", "small-cnn"],
                                      "small-cnn is an architecture, not a checkpoint: give its "
                                      "weights with --weights FILE"),
    "evaluate timm without timm": (["evaluate", "--model", "timm:resnet18", "--dataset",
                                    "synthetic"], "needs the optional package timm, which is not "
                                   "installed: pip install 'robustlab[timm]'"),
    "evaluate python without --trust-code": (["evaluate", "--model", "python:rl_nowhere:build",
                                              "--dataset", "synthetic"],
                                             "which robustlab does only when asked: pass "
                                             "trust_code=True (command line: --trust-code"),
    "evaluate python checkpoint untrusted": (["evaluate", "--model", "{fx}/pyclf.safetensors"],
                                             "is built by user code from rl_nowhere "
                                             "('python:rl_nowhere:build'), which robustlab runs "
                                             "only when asked"),
    "evaluate python checkpoint not importable": (["evaluate", "--model",
                                                   "{fx}/pyclf.safetensors", "--trust-code"],
                                                  "cannot import rl_nowhere"),
    "evaluate unknown torchvision model": (["evaluate", "--model", "torchvision:resnt18"],
                                           "unknown torchvision model 'resnt18'. Did you mean "
                                           "torchvision:resnet18"),
    "evaluate model flags with a checkpoint": ([*EVAL, "--num-classes", "10"],
                                               "is a robustlab checkpoint, whose sidecar records "
                                               "how to build it; drop --num-classes"),
    "evaluate unknown normalization": (["evaluate", "--model", "torchvision:resnet18",
                                        "--normalization", "imagenette"],
                                       "unknown normalisation 'imagenette'. Did you mean "
                                       "'imagenet'?"),
    "evaluate state_dict as --source": ([*EVAL, "--attack", "pgd", "--threat", "transfer",
                                         "--source", "{fx}/clf_sd.pt"],
                                        "is a plain state_dict; make it a checkpoint first: "
                                        "robustlab import-model"),
    "evaluate robustbench without autoattack": ([*EVAL, "--attack", "pgd", "--format",
                                                 "robustbench", "--out", "e.json"],
                                                "add --attack autoattack"),
    "evaluate robustbench without --out": ([*EVAL, "--attack", "autoattack", "--format",
                                            "robustbench"], "give --out"),
    "sweep state_dict without --arch": (["sweep", "--model", "{fx}/clf_sd.pt", "--values",
                                         "0,0.1", "--out", "s"], "name its network with --arch"),
    "import-model over a checkpoint": (["import-model", "{fx}/clf_sd.pt", "--arch", "small-cnn",
                                        "--out", "{fx}/clf.safetensors"],
                                       "already exists; pass --overwrite to replace it"),
    "import-model for another dataset": (["import-model", "{fx}/clf_sd.pt", "--arch",
                                          "small-cnn", "--dataset", "gtsrb", "--out",
                                          "m.safetensors"],
                                         "the model predicts 10 classes but gtsrb has 43"),
    "import-model pickled whole model": (["import-model", "{fx}/whole.pt", "--arch", "small-cnn",
                                          "--out", "m.safetensors"],
                                         "torch.save(model.state_dict()"),
    "import-model out not safetensors": (["import-model", "{fx}/clf_sd.pt", "--arch",
                                          "small-cnn", "--out", "m.pt"],
                                         "a checkpoint is X.safetensors"),
    # the GPU path (issue 14): fp16 autocast needs a CUDA GPU, refused before anything is read
    "train amp fp16 on a CPU": ([*TRAIN, "--dataset", "cifar10", "--data-root", EMPTY, "--amp",
                                "fp16", "--device", "cpu", "--out", "o"], FP16_ON_CPU),
    "evaluate amp fp16 on a CPU": ([*EVAL, "--dataset", "cifar10", "--data-root", EMPTY,
                                   "--attack", "pgd", "--amp", "fp16", "--device", "cpu"],
                                  FP16_ON_CPU),
    "pretrain amp fp16 on a CPU": (["pretrain", "--dataset", "cifar10", "--data-root", EMPTY,
                                   "--model", "small-cnn", "--amp", "fp16", "--device", "cpu",
                                   "--out", "o"], FP16_ON_CPU),
    "purifier amp fp16 on a CPU": ([*PURIFIER, "--dataset", "cifar10", "--data-root", EMPTY,
                                   "--extractor", "{fx}/clf.safetensors", "--amp", "fp16",
                                   "--device", "cpu"], FP16_ON_CPU),
    "sweep amp fp16 on a CPU": (["sweep", "--model", "{fx}/missing.safetensors", "--values",
                                "0,0.1", "--amp", "fp16", "--device", "cpu", "--out", "s"],
                               FP16_ON_CPU),
    "stress amp fp16 on a CPU": (["stress", "--model", "{fx}/missing.safetensors", "--amp",
                                 "fp16", "--device", "cpu", "--out", "s"], FP16_ON_CPU),
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
