"""Several processes going wrong: a rank that dies mid-epoch, resuming with another world size,
more processes than GPUs."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import free_port
from safetensors.torch import load_file

from robustlab import models
from robustlab.cli import main
from robustlab.training.state import load_state

ARGS = ["train", "--dataset", "synthetic", "--model", "small-cnn", "--width", "0.5",
        "--optimizer", "sgd", "--lr", "0.05", "--val", "0", "--seed", "3", "--batch-size", "32",
        "--subset", "256", "--no-progress"]

# imported by every Python process started with this folder on PYTHONPATH: the process of rank
# ROBUSTLAB_TEST_DIE_RANK exits (as a killed or crashed process would) at the second mini-batch
# of epoch ROBUSTLAB_TEST_DIE_EPOCH
KILLER = '''
import os
if os.environ.get("RANK") is not None and os.environ.get("RANK") == os.environ.get(
        "ROBUSTLAB_TEST_DIE_RANK"):
    import robustlab.data as _data
    _batches, _calls = _data.batches, [0]

    def batches(*args, **kwargs):
        if kwargs.get("shuffle"):
            _calls[0] += 1
        for i, batch in enumerate(_batches(*args, **kwargs)):
            if _calls[0] == int(os.environ["ROBUSTLAB_TEST_DIE_EPOCH"]) and i == 1:
                os._exit(3)
            yield batch

    _data.batches = batches
'''


def torchrun(args, *, nproc=2, env=None):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           str(nproc), "--master_port", str(free_port()), "-m", "robustlab.cli",
                           "--", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def weights(path):
    return load_file(str(path))


def max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Three epochs in one process: what every other run here must end with."""
    out = tmp_path_factory.mktemp("one") / "run"
    assert main(ARGS + ["--epochs", "3", "--out", str(out)]) == 0
    return weights(out / "model.safetensors")


def killer_env(tmp_path, rank: int, epoch: int) -> dict:
    """The environment under which process ``rank`` dies in epoch ``epoch`` (see KILLER)."""
    folder = tmp_path / "killer"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(KILLER)
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
            "ROBUSTLAB_TEST_DIE_RANK": str(rank), "ROBUSTLAB_TEST_DIE_EPOCH": str(epoch)}


def test_a_rank_dying_mid_epoch_stops_the_others_and_keeps_the_last_epoch(
        tmp_path, uninterrupted):
    """Rank 1 dies in epoch 2: torchrun stops rank 0 and says which rank failed; epoch 1's
    state is whole and loadable, and one process resumes it to the uninterrupted weights."""
    out = tmp_path / "run"
    res = torchrun(ARGS + ["--epochs", "3", "--out", str(out)], env=killer_env(tmp_path, 1, 2))
    assert res.returncode != 0
    assert "exitcode  : 3" in res.stderr and "rank      : 1" in res.stderr, res.stderr[-3000:]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    model = models.create("small-cnn", num_classes=10, in_channels=3, width=0.5)
    assert load_state(out / "last", model=model)[0] == 1  # whole, checksums and all
    # two processes, then one: a different world size on resume is allowed, and correct
    assert main(ARGS + ["--epochs", "3", "--out", str(out), "--resume"]) == 0
    assert max_diff(weights(out / "model.safetensors"), uninterrupted) < 2e-6


def test_resume_with_another_world_size_matches_one_process(tmp_path, uninterrupted):
    """One process stopped in epoch 2, resumed by two: the world size is not part of a run's
    settings (every rank trains on its slice of the same global batch, weighted by its size),
    so the run resumes and ends where one process ends."""
    out = tmp_path / "run"
    res = torchrun(ARGS + ["--epochs", "3", "--out", str(out)], nproc=1,
                   env=killer_env(tmp_path, 0, 2))
    assert res.returncode != 0 and len((out / "metrics.jsonl").read_text().splitlines()) == 1
    res = torchrun(ARGS + ["--epochs", "3", "--out", str(out), "--resume"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert max_diff(weights(out / "model.safetensors"), uninterrupted) < 2e-6
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="needs a machine with at most 1 GPU")
def test_more_processes_than_gpus_is_refused(tmp_path):
    """torchrun with 2 processes on the GPU path of a machine without 2 GPUs: a one-line error
    before any file is written."""
    out = tmp_path / "run"
    res = torchrun(ARGS + ["--epochs", "1", "--device", "cuda", "--out", str(out)])
    assert res.returncode != 0
    assert "of this machine has no GPU" in res.stderr and "--nproc_per_node" in res.stderr
    assert not out.exists()
