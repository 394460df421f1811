"""The trainer: files on disk, resume determinism, divergence, run-directory protection."""
import json

import pytest
from conftest import free_port as _free_port
from conftest import interrupt_in_epoch
import torch
from safetensors.torch import load_file

import robustlab.data as rl_data
from robustlab import models
from robustlab.errors import CheckpointError, ConfigError, TrainingDiverged
from robustlab.training import TrainConfig, train
from robustlab.training.classifier import methods as methods_mod
from robustlab.training.state import load_state, save_state


def cfg(**kw):
    base = dict(dataset="synthetic", model="small-cnn", width=0.5, epochs=2, batch_size=32,
                optimizer="adam", lr=0.003, val=0.2, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def weights(path):
    return load_file(str(path))


def test_train_writes_run_files(tmp_path):
    final = train(cfg(), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "model.json",
                 "last.safetensors", "last.json"):
        assert (run / name).exists(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    for m in lines:
        assert {"train_loss", "train_acc", "val_acc", "seconds", "lr"} <= set(m)
        assert 0 <= m["val_acc"] <= 1
    assert final["epoch"] == 2 and final == lines[-1]
    model = models.load(run / "model.safetensors")
    assert not model.training
    side = json.loads((run / "model.json").read_text())
    assert side["meta"]["dataset"] == "synthetic"
    assert side["meta"]["config"]["model"] == "small-cnn"
    assert side["meta"]["metrics"]["epoch"] == 2


def test_training_learns_synthetic(tmp_path):
    final = train(cfg(epochs=4), tmp_path / "r", progress=False)
    assert final["val_acc"] > 0.5  # 10 classes: chance is 0.1


def test_same_seed_same_weights(tmp_path):
    train(cfg(), tmp_path / "a", progress=False)
    train(cfg(), tmp_path / "b", progress=False)
    wa, wb = weights(tmp_path / "a/model.safetensors"), weights(tmp_path / "b/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, optimizer):
    c = cfg(epochs=3, optimizer=optimizer, lr=0.003 if optimizer == "adam" else 0.05)
    train(c, tmp_path / "full", progress=False)

    restore = interrupt_in_epoch(monkeypatch, rl_data, "batches", 2, 3)  # mid second epoch
    with pytest.raises(KeyboardInterrupt):
        train(c, tmp_path / "cut", progress=False)
    restore()
    # the last saved state stays loadable and is epoch 1's
    assert models.load(tmp_path / "cut/model.safetensors").robustlab_meta["meta"]["metrics"]["epoch"] == 1
    train(c, tmp_path / "cut", resume=True, progress=False)
    wf, wc = weights(tmp_path / "full/model.safetensors"), weights(tmp_path / "cut/model.safetensors")
    assert all(torch.equal(wf[k], wc[k]) for k in wf)
    lines = (tmp_path / "cut/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_nonfinite_loss_stops_and_keeps_last_good(tmp_path, monkeypatch):
    real = methods_mod.Standard.loss
    state = {"epoch": 0}

    def start_epoch(self, epoch, model, gen):
        state["epoch"] = epoch

    def poisoned(self, model, x, y, gen):
        out = real(self, model, x, y, gen)
        if state["epoch"] == 1:  # the second epoch diverges
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(methods_mod.Standard, "start_epoch", start_epoch)
    monkeypatch.setattr(methods_mod.Standard, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match="non-finite.*epoch 2.*epoch 1 was kept"):
        train(cfg(epochs=3, batch_size=16), tmp_path / "r", progress=False)
    kept = models.load(tmp_path / "r/model.safetensors")
    assert kept.robustlab_meta["meta"]["metrics"]["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in kept.parameters())


def test_out_dir_protection(tmp_path):
    train(cfg(epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        train(cfg(epochs=1), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="holds a different run.*lr"):
        train(cfg(epochs=1, lr=0.2), tmp_path / "r", resume=True, progress=False)
    (tmp_path / "r" / "notes.txt").write_text("mine")
    train(cfg(epochs=1, lr=0.2), tmp_path / "r", overwrite=True, progress=False)
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"  # only the run's own files go
    assert json.loads((tmp_path / "r/config.json").read_text())["config"]["lr"] == 0.2
    with pytest.raises(ConfigError, match="contradict"):
        train(cfg(epochs=1), tmp_path / "r", resume=True, overwrite=True, progress=False)


def test_unknown_method_and_method_args(tmp_path):
    with pytest.raises(Exception, match="unknown training method 'magic'.*standard"):
        train(cfg(method="magic"), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="unknown setting.*'eps'"):
        train(cfg(method="standard", method_args={"eps": 0.1}), tmp_path / "r2", progress=False)


def test_init_from_checkpoint_and_mismatch(tmp_path):
    train(cfg(epochs=1), tmp_path / "a", progress=False)
    train(cfg(epochs=1, init=str(tmp_path / "a/model.safetensors"), lr=1e-9, optimizer="adam"),
          tmp_path / "b", progress=False)
    wa, wb = weights(tmp_path / "a/model.safetensors"), weights(tmp_path / "b/model.safetensors")
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa if "num_batches" not in k)
    with pytest.raises(CheckpointError, match="the backbone does not match.*width 0.5.*width 0.25"):
        train(cfg(epochs=1, width=0.25, init=str(tmp_path / "a/model.safetensors")), tmp_path / "c",
              progress=False)


def test_state_round_trip_with_adam(tmp_path):
    model = models.create("small-cnn", num_classes=10, in_channels=3, width=0.25)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(4, 3, 32, 32)).sum().backward()
    opt.step()
    save_state(tmp_path / "s", model=model, optimizer=opt, epoch=5, extra={"best": 0.5})
    model2 = models.create("small-cnn", num_classes=10, in_channels=3, width=0.25)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-3)
    epoch, extra, _ = load_state(tmp_path / "s", model=model2, optimizer=opt2)
    assert epoch == 5 and extra == {"best": 0.5}
    sa, sb = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert list(sa) == list(sb)
    for pid in sa:
        assert all(torch.equal(torch.as_tensor(sa[pid][k]), torch.as_tensor(sb[pid][k])) for k in sa[pid])
    (tmp_path / "s.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read the training state"):
        load_state(tmp_path / "s", model=model2, optimizer=opt2)


def test_linear_probe_changes_only_the_head(tmp_path):
    train(cfg(epochs=1), tmp_path / "a", progress=False)
    train(cfg(epochs=1, init=str(tmp_path / "a/model.safetensors"), linear_probe=True),
          tmp_path / "b", progress=False)
    wa, wb = weights(tmp_path / "a/model.safetensors"), weights(tmp_path / "b/model.safetensors")
    changed = sorted(k for k in wa if not torch.equal(wa[k], wb[k]))
    head = models.create("small-cnn", num_classes=10, width=0.5)
    last = [n for n, m in head.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    assert changed == [f"{last}.bias", f"{last}.weight"]


def test_a_run_that_fails_to_start_leaves_nothing(tmp_path):
    with pytest.raises(Exception, match="unknown model"):
        train(cfg(model="resnet99"), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "config.json").exists()
    train(cfg(epochs=1), tmp_path / "r", progress=False)  # the retry is not refused


@pytest.mark.parametrize("batch", [
    ["--batch-size", "32"],                     # 400 samples: shards of 16, last batch 16 (8 + 8)
    ["--batch-size", "127"],                    # shards of 64 + 63, last batch 19 (10 + 9)
    ["--subset", "129", "--batch-size", "64"],  # a last batch of 1: rank 1's shard is empty
], ids=["even", "uneven", "trailing-1"])
def test_training_under_torchrun_matches_one_process(tmp_path, batch):
    """Two gloo CPU processes: each trains on its slice of every global batch, the gradients
    weighted by the slices' sizes, so the weights match one process (small-cnn has no batch norm)
    up to rounding: at most 3e-7 measured in every case (2e-6 allowed), against 1.3e-4 (uneven)
    and 1.1e-2 (trailing batch skipped) when shards were averaged as if equal.
    SGD, not Adam: Adam's first steps are about lr * sign(g), so reduction-order rounding of a
    near-zero gradient would move a weight by 2 * lr."""
    import subprocess
    import sys

    args = ["train", "--dataset", "synthetic", "--model", "small-cnn", "--width", "0.5",
            "--epochs", "1", "--optimizer", "sgd", "--lr", "0.05",
            "--val", "0.2", "--seed", "3", "--no-progress", *batch]
    from robustlab.cli import main

    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), "-m", "robustlab.cli", "--"] + args
                         + ["--out", str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    w1, w2 = weights(tmp_path / "one/model.safetensors"), weights(tmp_path / "two/model.safetensors")
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    assert diff < 2e-6, diff
    lines = (tmp_path / "two/metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # written once, by rank 0
    one = json.loads((tmp_path / "one/metrics.jsonl").read_text())
    two = json.loads(lines[0])  # every sample counted once, the trailing one too
    assert two["train_acc"] == one["train_acc"]
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)


def _reduce_worker(rank, port, out):
    import torch.distributed as dist

    from robustlab.distributed import World, all_reduce_grads, all_sum_named

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    a, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    if rank == 0:  # 3 of the batch's 4 samples; rank 1 reaches only b, and nobody reaches c
        a.grad = torch.full((3,), 3.0)
    else:
        b.grad = torch.ones(3)
    all_reduce_grads([a, b, c], World(rank, 2), weight=(0.75, 0.25)[rank])
    sums = all_sum_named({"kl": torch.tensor(2.0)} if rank == 0 else {}, World(rank, 2),
                         torch.device("cpu"))
    torch.save({"a": a.grad, "b": b.grad, "c": c.grad, "sums": sums}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_gradients_of_uneven_and_empty_shards_are_weighted(tmp_path):
    """A rank without a parameter's gradient contributes zeros to the same all-reduce (so ranks
    never desynchronise), each rank's gradient is weighted by its share of the batch, and a
    parameter no rank reached keeps no gradient; a statistic one rank lacks counts as zero."""
    torch.multiprocessing.spawn(_reduce_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert torch.equal(got["a"], torch.full((3,), 2.25))
        assert torch.equal(got["b"], torch.full((3,), 0.25))
        assert got["c"] is None and {k: float(v) for k, v in got["sums"].items()} == {"kl": 2.0}


# train-purifier, pretrain and compare-pretraining run under torchrun too (they used to refuse):
# tests/test_distributed_trainers.py
