"""Nothing lost, nothing trusted blindly: run-folder locks, resume that checks what it depends
on, leftovers, file permissions, torn metrics, full and read-only disks."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import interrupt_in_epoch
from safetensors.torch import load_file
from test_hostile_inputs import robustlab_cmd

import robustlab as rl
import robustlab.data as rl_data
from robustlab._lock import Lock
from robustlab.errors import ConfigError
from robustlab.training import TrainConfig, train
from robustlab.training.classifier import methods as rl_methods
from robustlab.training.purifier.trainer import train_purifier
from robustlab.training.purifier.config import PurifierConfig

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = dict(dataset="synthetic", model="small-cnn", batch_size=16, val=0, subset=32)


def quick(epochs=1, **kw) -> TrainConfig:
    return TrainConfig(**{**CFG, "epochs": epochs, **kw})


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


# -- locks ----------------------------------------------------------------------------------------
def test_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from robustlab._lock import Lock; "
        f"Lock({str(tmp_path / 'run')!r}, is_dir=True).acquire(); print('held', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"in use by process {holder.pid}"):
            Lock(tmp_path / "run", is_dir=True).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up at all: the OS drops the lock
        holder.wait()
    with Lock(tmp_path / "run", is_dir=True):
        with pytest.raises(ConfigError, match="in use by this process"):
            Lock(tmp_path / "run", is_dir=True).acquire()
    assert not (tmp_path / "run" / ".robustlab.lock").exists()  # released: nothing left


def test_two_trainings_on_one_out_one_is_refused(tmp_path):
    # 10,000 epochs: the first run is never done before the second is refused and Ctrl-C comes
    args = ["train", "--dataset", "synthetic", "--model", "small-cnn", "--epochs", "10000",
            "--subset", "64", "--batch-size", "16", "--val", "0", "--no-progress",
            "--out", str(tmp_path / "x")]
    first = subprocess.Popen([sys.executable, "-m", "robustlab.cli", *args, "--seed", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = tmp_path / "x" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text()) and time.time() < deadline:
        time.sleep(0.05)  # the first run has saved an epoch and is still going
    second = robustlab_cmd(*args, "--seed", "1", cwd=tmp_path)
    first.send_signal(signal.SIGINT)  # Ctrl-C: it stops after keeping its last epoch
    first.communicate(timeout=120)
    assert second.returncode == 2
    assert f"in use by process {first.pid}" in second.stderr, second.stderr
    assert first.returncode == 130
    epochs = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1))  # one run's lines only
    assert json.loads((tmp_path / "x" / "config.json").read_text())["config"]["seed"] == 0
    assert not (tmp_path / "x" / ".robustlab.lock").exists()


# -- resume checks what it depends on ---------------------------------------------------------------
def _interrupted(monkeypatch, cfg, out, trainer=train):
    restore = interrupt_in_epoch(monkeypatch, rl_data, "batches", 2, 0)
    with pytest.raises(KeyboardInterrupt):
        trainer(cfg, out, progress=False)
    restore()


def test_resume_refuses_a_replaced_init_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    for name in ("a", "b"):
        rl.models.save(rl.models.create("small-cnn", num_classes=10, in_channels=3),
                       tmp_path / f"{name}.safetensors", dataset="synthetic")
    shutil.copy(tmp_path / "a.safetensors", tmp_path / "init.safetensors")
    shutil.copy(tmp_path / "a.json", tmp_path / "init.json")
    cfg = quick(epochs=2, init=str(tmp_path / "init.safetensors"))
    _interrupted(monkeypatch, cfg, tmp_path / "run")
    shutil.copy(tmp_path / "b.safetensors", tmp_path / "init.safetensors")  # same path, new model
    shutil.copy(tmp_path / "b.json", tmp_path / "init.json")
    with pytest.raises(ConfigError, match="the init checkpoint .*init.safetensors.* has changed"):
        train(cfg, tmp_path / "run", resume=True, progress=False)
    shutil.copy(tmp_path / "a.safetensors", tmp_path / "init.safetensors")  # the original back
    shutil.copy(tmp_path / "a.json", tmp_path / "init.json")
    assert train(cfg, tmp_path / "run", resume=True, progress=False)["epoch"] == 2


def test_resume_refuses_a_replaced_purifier_extractor(tmp_path, monkeypatch):
    torch.manual_seed(0)
    for name in ("a", "b"):
        rl.models.save(rl.models.create("vgg11", num_classes=10, in_channels=3, width=0.125),
                       tmp_path / f"{name}.safetensors", dataset="synthetic")
    ext = tmp_path / "base" / "model.safetensors"
    ext.parent.mkdir()
    shutil.copy(tmp_path / "a.safetensors", ext)
    shutil.copy(tmp_path / "a.json", ext.with_suffix(".json"))
    cfg = PurifierConfig(dataset="synthetic", extractor=str(ext), width=0.125, epochs=2,
                         subset=32, steps=1, val_n=0, grid_n=2, batch_size=16)
    _interrupted(monkeypatch, cfg, tmp_path / "pur", trainer=train_purifier)
    shutil.copy(tmp_path / "b.safetensors", ext)
    shutil.copy(tmp_path / "b.json", ext.with_suffix(".json"))
    with pytest.raises(ConfigError, match="the extractor .*model.safetensors.* has changed"):
        train_purifier(cfg, tmp_path / "pur", resume=True, progress=False)


def test_resume_refuses_other_training_data(tmp_path, monkeypatch):
    from data_fixtures import write_idx

    write_idx(tmp_path / "data", 64, 16, seed=0)
    cfg = TrainConfig(dataset="fashion-mnist", model="small-cnn", epochs=2, batch_size=16,
                      val=0)
    restore = interrupt_in_epoch(monkeypatch, rl_data, "batches", 2, 0)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", data_root=str(tmp_path / "data"), progress=False)
    restore()
    write_idx(tmp_path / "data", 64, 16, seed=1)  # the same files, other images
    with pytest.raises(ConfigError, match="the training data has changed"):
        train(cfg, tmp_path / "run", data_root=str(tmp_path / "data"), resume=True,
              progress=False)


# -- leftovers and silent restarts -------------------------------------------------------------
def _failing_method(monkeypatch):
    real = rl_methods.Standard.loss

    def broken(self, *a, **k):
        raise RuntimeError("a bug in epoch 1")

    monkeypatch.setattr(rl_methods.Standard, "loss", broken)
    return lambda: monkeypatch.setattr(rl_methods.Standard, "loss", real)


def test_a_run_that_fails_in_epoch_1_leaves_nothing_and_the_rerun_starts(tmp_path, monkeypatch):
    restore = _failing_method(monkeypatch)
    with pytest.raises(RuntimeError):
        train(quick(), tmp_path / "a" / "run", progress=False)
    assert not (tmp_path / "a").exists()  # not even the folders it made
    restore()
    assert train(quick(), tmp_path / "a" / "run", progress=False)["epoch"] == 1


def test_a_failing_overwrite_keeps_the_old_run(tmp_path, monkeypatch):
    train(quick(), tmp_path / "run", progress=False)
    before = tree(tmp_path / "run")
    restore = _failing_method(monkeypatch)
    with pytest.raises(RuntimeError):
        train(quick(seed=3), tmp_path / "run", overwrite=True, progress=False)
    assert tree(tmp_path / "run") == before
    restore()
    train(quick(seed=3), tmp_path / "run", overwrite=True, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["seed"] == 3
    assert not (tmp_path / "run" / ".replaced").exists()


def test_an_overwrite_killed_before_its_first_epoch_is_undone(tmp_path):
    train(quick(), tmp_path / "run", progress=False)
    before = tree(tmp_path / "run")
    # what a SIGKILL between setting the old run aside and the new one's first save leaves
    run, replaced = tmp_path / "run", tmp_path / "run" / ".replaced"
    replaced.mkdir()
    for f in list(run.iterdir()):
        if f.is_file():
            os.replace(f, replaced / f.name)
    (run / "config.json").write_text(json.dumps({"config": {"kind": "train", "seed": 9}}))
    (run / ".model.safetensors.x1y2.tmp").write_bytes(b"half a file")
    with pytest.raises(ConfigError, match="already holds a run"):  # opening tidies, then checks
        train(quick(), run, progress=False)
    assert tree(run) == before


def test_resume_drops_a_torn_metrics_line_and_temporary_files(tmp_path, caplog):
    run, cfg = tmp_path / "run", quick(epochs=2)
    train(cfg, run, progress=False)
    m = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(m + '{"epoch": 3, "train_lo')  # torn by a SIGKILL
    (run / ".model.safetensors.zz.tmp").write_bytes(b"partial")  # a killed atomic write
    with caplog.at_level("WARNING"):
        train(cfg, run, resume=True, progress=False)  # nothing left to do; it opens cleanly
    assert not list(run.glob(".*.tmp"))
    assert "torn last line" in caplog.text
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_resume_of_an_empty_folder_says_it_starts_anew(tmp_path, caplog):
    with caplog.at_level("INFO"):
        train(quick(), tmp_path / "run", resume=True, progress=False)
    assert "nothing to resume" in caplog.text


def test_every_file_of_a_run_gets_the_same_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        train(quick(), tmp_path / "run", progress=False)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()}
    assert set(modes.values()) == {0o644}, modes


# -- full and read-only disks (a small tmpfs; needs root and mount) -------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def mount(size_bytes: int, read_only: bool = False) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        opts = f"size={max(size_bytes, 8192)}" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_evaluate_on_a_full_disk_prints_its_results_and_leaves_no_file(tmp_path, tmpfs):
    rl.models.save(rl.models.create("small-cnn", num_classes=10, in_channels=3),
                   tmp_path / "m.safetensors", dataset="synthetic")
    disk = tmpfs(64 * 1024)
    (disk / "filler").write_bytes(b"x" * (64 * 1024 - 4096))  # one page left: for the lock
    r = robustlab_cmd("evaluate", "--model", str(tmp_path / "m.safetensors"), "--n", "64",
                      "--attack", "fgsm", "--eps", "0.03", "--no-progress", "--out",
                      str(disk / "eval.json"), cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "No space left on device" in lines[0] and "printed on stdout" in lines[0]
    assert json.loads(r.stdout)["n"] == 64  # what was computed survives
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_sweep_on_a_full_disk_writes_no_partial_set(tmp_path, tmpfs):
    rl.models.save(rl.models.create("small-cnn", num_classes=10, in_channels=3),
                   tmp_path / "m.safetensors", dataset="synthetic")
    disk = tmpfs(48 * 1024)
    (disk / "filler").write_bytes(b"x" * (48 * 1024 - 4096 * 3))  # room for CSV+JSON, no PNG
    r = robustlab_cmd("sweep", "--model", f"m={tmp_path / 'm.safetensors'}", "--values",
                      "0,0.03", "--n", "16", "--no-progress", "--out", str(disk / "s"),
                      cwd=tmp_path)
    assert r.returncode == 2 and "No space left on device" in r.stderr, r.stderr
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_evaluate_into_a_read_only_folder_fails_before_any_work(tmp_path, tmpfs):
    rl.models.save(rl.models.create("small-cnn", num_classes=10, in_channels=3),
                   tmp_path / "m.safetensors", dataset="synthetic")
    disk = tmpfs(64 * 1024, read_only=True)
    t0 = time.perf_counter()
    r = robustlab_cmd("evaluate", "--model", str(tmp_path / "m.safetensors"), "--attack", "pgd",
                      "--steps", "200", "--eps", "0.03", "--no-progress", "--out",
                      str(disk / "eval.json"), cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "read-only file system" in lines[0], r.stderr
    assert time.perf_counter() - t0 < 60  # PGD-200 over the whole test set never ran


def test_train_on_a_full_disk_keeps_the_last_good_epoch(tmp_path, tmpfs):
    model = rl.models.create("small-cnn", num_classes=10, in_channels=3)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    # epoch 1 needs model (1x) + state (3x: weights and Adam's two moments); epoch 2 needs room
    # for a new copy of each beside the old ones, which a 4.6x disk does not have
    disk = tmpfs(int(4.6 * size) + 64 * 1024)
    r = robustlab_cmd("train", "--dataset", "synthetic", "--model", "small-cnn", "--epochs", "2",
                      "--subset", "32", "--batch-size", "16", "--val", "0", "--no-progress",
                      "--out", str(disk / "run"), cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "No space left on device" in lines[-1], r.stderr
    assert "state of epoch 1 is intact" in lines[-1] and "Traceback" not in r.stderr
    run = disk / "run"
    assert json.loads((run / "last.json").read_text())["epoch"] == 1
    assert load_file(str(run / "last.safetensors"))  # readable and whole
    assert not list(run.glob(".*.tmp"))


# -- evaluation notes -------------------------------------------------------------------------------
def test_evaluate_notes_a_short_test_set_and_other_datasets(tmp_path):
    from robustlab.purifiers import create_purifier

    rl.models.save(rl.models.create("small-cnn", num_classes=10, in_channels=3),
                   tmp_path / "m.safetensors", dataset="cifar10")
    rl.models.save(create_purifier("unet-b", 3, width=0.125), tmp_path / "p.safetensors",
                   dataset="gtsrb")
    r = robustlab_cmd("evaluate", "--model", str(tmp_path / "m.safetensors"), "--purifier",
                      str(tmp_path / "p.safetensors"), "--dataset", "synthetic", "--n", "100000",
                      "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trained on cifar10 but is evaluated on synthetic" in r.stderr
    assert "purifier was trained on gtsrb but its classifier on cifar10" in r.stderr
    assert "n=100000 asked for" in r.stderr


def test_resume_ignores_the_cache_dir_and_accepts_a_run_saved_before_data_options(tmp_path):
    # where decoded images are cached does not change what is trained; a config.json written
    # before data options existed (no "data" key) means the defaults
    from dataclasses import replace

    from data_fixtures import write_image_folder

    from robustlab.data.options import DataOptions

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 32, 32), generator=g, dtype=torch.uint8).numpy()
    write_image_folder(tmp_path / "imgs", images, (torch.arange(40) % 4).numpy())
    cfg = TrainConfig(dataset="folder", model="small-cnn", epochs=2, batch_size=16, width=0.25,
                      val=0)
    out, root = tmp_path / "run", str(tmp_path / "imgs")
    train(replace(cfg, epochs=1), out, data_root=root, progress=False)
    doc = json.loads((out / "config.json").read_text())
    doc["config"].pop("data")
    doc["config"]["epochs"] = 2
    (out / "config.json").write_text(json.dumps(doc))
    moved = replace(cfg, data=DataOptions(cache_dir=str(tmp_path / "cache")))
    assert train(moved, out, data_root=root, resume=True, progress=False)["epoch"] == 2
    with pytest.raises(ConfigError, match="differs in: data"):
        train(replace(cfg, data=DataOptions(split_seed=1)), out, data_root=root, resume=True,
              progress=False)


def test_resume_accepts_a_run_saved_before_a_setting_existed(tmp_path):
    """A config.json without a setting added since (channels_last, a pre-training adversary)
    counts as that setting's default, so the run resumes; a saved value that differs from the
    default is still a different run."""
    from dataclasses import replace

    from robustlab.training import PretrainConfig, pretrain

    cfg = PretrainConfig(dataset="synthetic", model="small-cnn", method="simclr", epochs=2,
                         batch_size=32, subset=64, width=0.25)
    out = tmp_path / "run"
    pretrain(replace(cfg, epochs=1), out, progress=False)
    doc = json.loads((out / "config.json").read_text())
    for new in ("channels_last", "compile", "adversary", "yopo_m", "yopo_n"):
        doc["config"].pop(new)
    doc["config"]["epochs"] = 2
    (out / "config.json").write_text(json.dumps(doc))
    assert pretrain(cfg, out, resume=True, progress=False)["epoch"] == 2
    doc["config"]["channels_last"] = True
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="differs in: channels_last"):
        pretrain(cfg, out, resume=True, progress=False)
