"""`reproduce --nproc-per-node`: training and evaluation steps under torchrun, GPU slots for
side-by-side jobs, and what goes wrong (too few GPUs, a failing or dying process)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_hostile_inputs import robustlab_cmd
from test_torchrun_faults import killer_env

from robustlab.errors import ConfigError
from robustlab.experiments import RECIPES, Output, Recipe, Step, reproduce, ref
from robustlab.experiments.launch import Launch, gpu_slots
from robustlab.experiments.render import Table


# -- GPU slots and launch settings -------------------------------------------------------------------
def test_each_side_by_side_job_gets_gpus_of_its_own():
    assert gpu_slots(Launch(2), jobs=2, device="cuda", gpus=4) == ["0,1", "2,3"]
    assert gpu_slots(Launch(1), jobs=3, device="auto", gpus=8) == ["0", "1", "2"]
    assert gpu_slots(Launch(4), jobs=1, device="cuda", gpus=4) == [None]  # every GPU: as it is
    assert gpu_slots(Launch(2), jobs=2, device="cpu", gpus=8) == [None, None]  # gloo on CPUs
    assert gpu_slots(Launch(2), jobs=1, device="auto", gpus=0) == [None]  # no GPU: the CPU


@pytest.mark.parametrize("launch, jobs, message", [
    (Launch(2), 1, "--nproc-per-node 2 needs 2 GPUs, and this machine has 1"),
    (Launch(1), 2, "--jobs 2 x --nproc-per-node 1 needs 2 GPUs, and this machine has 1"),
])
def test_more_processes_than_gpus_are_refused(launch, jobs, message):
    with pytest.raises(ConfigError, match=message):
        gpu_slots(launch, jobs=jobs, device="cuda", gpus=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"nproc_per_node": 0}, "--nproc-per-node must be an integer >= 1, got 0"),
    ({"nnodes": 2}, "--nnodes > 1 needs --master-addr"),
    ({"nnodes": 2, "node_rank": 2, "master_addr": "h"}, r"--node-rank must be in 0\.\.1"),
])
def test_bad_launch_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Launch(**kwargs)


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine has 2 GPUs")
def test_cli_nproc_larger_than_the_gpus_is_one_line_and_writes_nothing(tmp_path):
    res = robustlab_cmd("reproduce", "ssr-purifier", "--preset", "smoke", "--out",
                        str(tmp_path / "out"), "--nproc-per-node", "2", "--device", "cuda",
                        cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"robustlab: error: --nproc-per-node 2 needs 2 GPUs, and this machine has "
        f"{torch.cuda.device_count()}; ask for at most {torch.cuda.device_count()} processes in "
        "all, or run on the CPU with --device cpu (gloo processes)"]
    assert not (tmp_path / "out").exists()


# -- a small recipe of real steps, run under torchrun -------------------------------------------------
TRAIN = {"dataset": "synthetic", "model": "small-cnn", "width": 0.5, "epochs": 1,
         "batch_size": 32, "subset": 96, "optimizer": "sgd", "lr": 0.05, "val": 0, "seed": 3}


@dataclass(frozen=True)
class TinySettings:
    init: str


def _steps(s: TinySettings):
    attack = {"name": "pgd", "eps": 8 / 255, "steps": 2, "step_size": 4 / 255}
    return [Step("clf", "train", {"config": {**TRAIN, "init": s.init or None}}),
            Step("eval", "evaluate", {"model": ref("clf", "model.safetensors"),
                                      "dataset": "synthetic", "n": 40, "batch_size": 16,
                                      "attacks": [attack]})]


def _table(res, s, _fig):
    cell = res.cell(lambda: res.result("eval")["attacks"][0]["robust_acc"])
    return Table("tiny", "Tiny", ["pgd"], [("small-cnn", [cell])], "robust accuracy", "none")


def tiny_recipe(tmp_path, init: str = "", name: str = "") -> str:
    """A recipe of one training and one evaluation step (registered once per test folder)."""
    name = name or f"tiny-launch-{len(RECIPES.names())}"
    RECIPES.register(name)(Recipe(name, "Tiny", "none", TinySettings, _steps, {
        "tiny": Output("tiny", "Tiny table", "table", lambda s: ["eval"], _table)},
        yaml=tmp_path / f"{name}.yaml"))
    RECIPES.get(name).yaml.write_text(yaml.safe_dump({"recipe": name, "presets": {
        p: {"init": init} for p in ("smoke", "quick", "paper")}}))
    return name


@pytest.fixture(scope="module")
def in_one_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    doc = reproduce(tiny_recipe(tmp), "smoke", tmp / "out", device="cpu", progress=False,
                    say=lambda _: None)
    return tmp / "out", doc


def test_steps_under_torchrun_match_one_process(tmp_path, in_one_process):
    """Two gloo processes per step: the classifier's weights of one process (small-cnn has no
    batch norm; 2e-6 allowed, as for `robustlab train`) and the same evaluation, recorded as
    launched with 2 processes."""
    one_out, one_doc = in_one_process
    lines: list[str] = []
    doc = reproduce(tiny_recipe(tmp_path), "smoke", tmp_path / "out", device="cpu",
                    progress=False, say=lines.append, launch=Launch(2))
    assert all(s["status"] == "ok" for s in doc["steps"].values()), lines
    w1 = load_file(str(one_out / one_doc["steps"]["clf"]["folder"] / "model.safetensors"))
    w2 = load_file(str(tmp_path / "out" / doc["steps"]["clf"]["folder"] / "model.safetensors"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 2e-6
    r1, r2 = one_doc["steps"]["eval"]["result"], doc["steps"]["eval"]["result"]
    assert r2["clean_acc"] == r1["clean_acc"] and r2["n"] == r1["n"] == 40
    step = json.loads((tmp_path / "out" / doc["steps"]["clf"]["folder"] / "step.json").read_text())
    assert step["launch"] == {"nproc_per_node": 2, "nnodes": 1, "gpus": None}
    assert (tmp_path / "out/tables/tiny.md").exists()


def test_a_failing_process_fails_its_step_with_its_own_error(tmp_path):
    """A step whose processes raise: the step fails with their one-line error; the evaluation
    that needs it is skipped; the rest of the reproduction still finishes."""
    lines: list[str] = []
    doc = reproduce(tiny_recipe(tmp_path, init=str(tmp_path / "missing.safetensors")), "smoke",
                    tmp_path / "out", device="cpu", progress=False, say=lines.append,
                    launch=Launch(2))
    clf, ev = doc["steps"]["clf"], doc["steps"]["eval"]
    assert clf["status"] == "failed" and clf["error"].startswith("CheckpointError: --init:")
    assert ev["status"] == "skipped"
    assert (tmp_path / "out/results.json").exists()


def test_a_dying_process_fails_its_step_and_the_rerun_resumes(tmp_path, monkeypatch,
                                                              in_one_process):
    """Rank 1 dies in the training step's first epoch: torchrun stops rank 0, the step fails
    saying so, and the same command run again finishes every step."""
    for k, v in killer_env(tmp_path, 1, 1).items():
        monkeypatch.setenv(k, v)
    name = tiny_recipe(tmp_path)
    doc = reproduce(name, "smoke", tmp_path / "out", device="cpu", progress=False,
                    say=lambda _: None, launch=Launch(2))
    assert doc["steps"]["clf"]["status"] == "failed"
    assert doc["steps"]["clf"]["error"].startswith("torchrun exited with code 1: one of 2 "
                                                   "processes died or failed")
    monkeypatch.delenv("ROBUSTLAB_TEST_DIE_RANK")
    doc = reproduce(name, "smoke", tmp_path / "out", device="cpu", progress=False,
                    say=lambda _: None, launch=Launch(2))
    assert all(s["status"] == "ok" for s in doc["steps"].values())
    assert doc["steps"]["eval"]["result"]["clean_acc"] == (
        in_one_process[1]["steps"]["eval"]["result"]["clean_acc"])


def test_two_machines_run_one_reproduction(tmp_path, in_one_process):
    """Two "machines" on this one (the same command with --nnodes 2 and each its --node-rank,
    one process each, --out shared): machine 0 writes the steps and tables, machine 1 only
    meets it for the training and evaluation steps; the classifier equals one process's."""
    import os
    import subprocess
    import sys

    from conftest import free_port

    name, port = tiny_recipe(tmp_path, name="tiny-two-machines"), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "recipe").mkdir()
    script = tmp_path / "machine1.py"
    script.write_text(
        "import sys, pathlib\n"
        "import test_reproduce_launch as t\n"
        "from robustlab.experiments import reproduce\n"
        "from robustlab.experiments.launch import Launch\n"
        f"name = t.tiny_recipe(pathlib.Path({str(tmp_path / 'recipe')!r}), "
        "name='tiny-two-machines')\n"
        f"reproduce(name, 'smoke', {str(tmp_path / 'out')!r}, device='cpu', progress=False,\n"
        f"          launch=Launch(1, 2, 1, '127.0.0.1', {port}))\n")
    machine1 = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    doc = reproduce(name, "smoke", tmp_path / "out", device="cpu", progress=False,
                    say=lines.append, launch=Launch(1, 2, 0, "127.0.0.1", port))
    said = machine1.communicate(timeout=300)[0]
    assert machine1.returncode == 0, said[-2000:]
    assert all(s["status"] == "ok" for s in doc["steps"].values()), lines
    one_out, one_doc = in_one_process
    w1 = load_file(str(one_out / one_doc["steps"]["clf"]["folder"] / "model.safetensors"))
    w2 = load_file(str(tmp_path / "out" / doc["steps"]["clf"]["folder"] / "model.safetensors"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 2e-6
    step = json.loads((tmp_path / "out" / doc["steps"]["eval"]["folder"] / "step.json").read_text())
    assert step["launch"]["nnodes"] == 2
