"""train-purifier, pretrain and compare-pretraining under torchrun: two gloo CPU processes on the
slices of every global batch reach the weights of one process (global NT-Xent, batch norm and
dropout over the global batch, random starts drawn for the global batch), across two "machines"
too; and the pieces that make it so (robustlab.shard), checked against one process directly."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import free_port
from test_gpu_options import needs_compiler
from safetensors.torch import load_file
from torch import nn

from robustlab import models
from robustlab.attacks.geometry import random_start
from robustlab.attacks.objectives import nt_xent
from robustlab.distributed import World, all_reduce_grads
from robustlab.purifiers import LOSS_PRESETS, create_critic, create_purifier
from robustlab.shard import convert_layers, global_rows, shard_start, sharded
from robustlab.training.contrastive.dual_bn import convert_dual_bn
from robustlab.training.contrastive.methods import PRETRAIN_METHODS, ContrastiveAttack
from robustlab.training.contrastive.projection import ProjectionModel
from robustlab.training.purifier.steps import GanParts, make_attack, train_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _net() -> nn.Module:
    torch.manual_seed(0)  # float64: any difference from one process beyond 1e-12 is a bug
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 4 * 4, 6)).double()


def _images() -> torch.Tensor:
    return torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _step(net, x, gen, shard=None):
    """A loss with everything a trainer's step has: batch norm, dropout, a random start, and a
    loss over the whole batch (NT-Xent of two halves of the projections)."""
    start = shard_start(x, 0.1, gen) if shard is not None else random_start(x, 0.1, "linf", gen)
    z = net(start)
    return nt_xent(*z.chunk(2, dim=1), 0.5) if z.shape[0] else z.sum()


def _shard_worker(rank, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    w = World(rank, 2)
    net = _net()
    convert_layers(net)
    x = _images()  # rank 0: rows 0, 2, 4; rank 1: rows 1, 3
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(3)  # the dropout masks
    with sharded(5, w) as shard:
        loss = _step(net, shard.take(x), gen, shard)
        loss.backward()
    all_reduce_grads(net.parameters(), w, weight=1.0)
    torch.save({"loss": loss.detach(), "grads": [p.grad for p in net.parameters()],
                "buffers": [b.clone() for b in net.buffers()],
                "after": torch.rand(3, generator=gen),
                "rng": torch.rand(3)}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_sharded_step_gives_the_gradient_of_one_process(tmp_path):
    """Two ranks (3 and 2 of 5 samples) with batch norm, dropout, a random start and NT-Xent over
    the batch, in float64: each rank's loss is the global one, and the summed gradients, the
    running statistics and the generators' states afterwards are one process's (measured: 3e-14
    on gradients of size up to 17; in float32 the same step differs by 6e-6, rounding)."""
    net = _net()
    x = _images()
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(3)
    loss = _step(net, x, gen)
    loss.backward()
    after, rng = torch.rand(3, generator=gen), torch.rand(3)
    torch.multiprocessing.spawn(_shard_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert float(got["loss"]) == pytest.approx(float(loss.detach()), abs=1e-12)
        for p, g in zip(net.parameters(), got["grads"]):
            assert float((p.grad - g).abs().max()) < 1e-12
        for b, g in zip(net.buffers(), got["buffers"]):
            assert float((b - g).abs().max()) < 1e-12
        assert torch.equal(got["after"], after) and torch.equal(got["rng"], rng)


def test_outside_a_sharded_step_nothing_changes():
    """With one process (or outside a step) the converted layers are the plain ones, the rows are
    not gathered and no start is drawn."""
    plain, converted = _net(), _net()
    assert convert_layers(converted) == 2
    assert plain.state_dict().keys() == converted.state_dict().keys()
    x = _images()
    torch.manual_seed(5)
    a = plain(x)
    torch.manual_seed(5)
    with sharded(5, World()) as shard:
        assert shard is None
        b = converted(x)
        z = torch.rand(5, 2)
        assert global_rows(z)[0] is z and shard_start(x, 0.1, None) is None
    assert torch.equal(a, b)


def _compiled_worker(rank, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    torch.save(_compiled_steps(World(rank, 2)), f"{out}/{rank}.pt")
    dist.destroy_process_group()


def _compiled_steps(w: World) -> dict:
    """Two steps of _step through torch.compile (as the trainers' --compile runs it)."""
    from robustlab.runtime import compiled

    net = _net()
    if w.size > 1:
        convert_layers(net)
    fast, gen, grads = compiled(net, True), torch.Generator().manual_seed(2), []
    torch.manual_seed(3)  # the dropout masks
    for _ in range(2):
        x = _images()
        with sharded(5, w) as shard:
            loss = _step(fast, x if shard is None else shard.take(x), gen, shard)
            loss.backward()
        all_reduce_grads(net.parameters(), w, weight=1.0)
        grads.append([p.grad.clone() for p in net.parameters()])
        net.zero_grad()
    return {"grads": grads, "buffers": [b.clone() for b in net.buffers()]}


@needs_compiler
def test_compiled_sharded_step_gives_the_gradient_of_one_process(tmp_path):
    """torch.compile and torchrun go together: the global layers read a ContextVar, which dynamo
    guards on (a graph inside a sharded step, another outside it) while it traces their
    collectives into the graph; with random ops drawn as in eager mode (runtime.compiled) two
    compiled ranks give the gradients and running statistics of one compiled process (measured:
    4e-15 in float64)."""
    one = _compiled_steps(World())
    torch.multiprocessing.spawn(_compiled_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt")
        for step, want in zip(got["grads"], one["grads"]):
            assert max(float((a - b).abs().max()) for a, b in zip(step, want)) < 1e-12
        for b, g in zip(one["buffers"], got["buffers"]):
            assert float((b - g).abs().max()) < 1e-12


# ---------------------------------------------------------------- whole steps, in float64
# A trainer's step on two ranks against one process, in float64 so that only a wrong formula can
# differ (float32 rounding, amplified by batch norm and by the sign steps of PGD over a few
# steps, would hide it): the models with batch norm (and dropout) the end-to-end runs below avoid.

def _spawn(fn, tmp_path, *args):
    torch.multiprocessing.spawn(_worker, args=(free_port(), str(tmp_path), fn, args), nprocs=2)
    return [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]


def _worker(rank, port, out, fn, args):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    torch.save(globals()[fn](World(rank, 2), *args), f"{out}/{rank}.pt")
    dist.destroy_process_group()


def _gan(w: World):
    """unet-b + patchgan-b (batch norm and dropout in both), a frozen small-cnn extractor, B3."""
    torch.manual_seed(0)
    g = create_purifier("unet-b", 3, width=0.125).double()
    d = create_critic("patchgan-b", 3, width=0.125, image_size=32).double()
    net = models.create("small-cnn", num_classes=10, in_channels=3, width=0.25,
                        mean=(0.5,) * 3, std=(0.25,) * 3).double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    ext = models.feature_extractor(net, 2)
    if w.size > 1:
        convert_layers(g), convert_layers(d)
    return GanParts(g, d, torch.optim.Adam(g.parameters(), 1e-3),
                    torch.optim.Adam(d.parameters(), 1e-3), LOSS_PRESETS.get("B3").weights, ext,
                    ext)


def _gan_steps(w: World) -> dict:
    """Two steps: a batch of 5 (3 + 2) and one of 1 (1 + an empty slice)."""
    parts, gen = _gan(w), torch.Generator().manual_seed(2)
    attack = make_attack(parts.extractor, eps=16 / 255, steps=2, step_size=None,
                         random_start=True, generator=gen, amp_dtype=None)
    data = torch.Generator().manual_seed(1)
    torch.manual_seed(3)  # the dropout masks
    for b in (5, 1):
        x = torch.rand(b, 3, 32, 32, generator=data, dtype=torch.float64)
        with sharded(b, w) as shard:
            train_step(parts, x if shard is None else shard.take(x), attack=attack,
                       autocast=contextlib.nullcontext, shard=shard)
    return {"G": parts.generator.state_dict(), "D": parts.critic.state_dict(),
            "after": torch.rand(2, generator=gen), "rng": torch.rand(2)}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_purifier_steps_on_two_ranks_equal_one_process(tmp_path):
    """The feature-distortion start, batch norm and dropout of G and D over the global batch, the
    parts of the gradients summed, a slice left empty by a batch of 1: after two Adam steps G and
    D (weights and running statistics) are one process's (measured: 2e-13 and 3e-15) and the
    generators are in step."""
    one = _gan_steps(World())
    for got in _spawn("_gan_steps", tmp_path):
        assert _max_diff(one["G"], got["G"]) < 1e-10 and _max_diff(one["D"], got["D"]) < 1e-10
        assert torch.equal(one["after"], got["after"]) and torch.equal(one["rng"], got["rng"])


def _encoder_steps(w: World, method: str) -> dict:
    """Two SGD steps of a pre-training method on a resnet18 (batch norm; dual for dual-bn)."""
    torch.manual_seed(0)
    enc = models.create("resnet18", num_classes=10, in_channels=3, width=0.125,
                        mean=(0.5,) * 3, std=(0.25,) * 3)
    if PRETRAIN_METHODS.get(method).dual_bn:
        convert_dual_bn(enc)
    net = ProjectionModel(enc, 16).double()
    if w.size > 1:
        convert_layers(net)
    opt = torch.optim.SGD(net.trainable_parameters(), lr=0.05, momentum=0.9)
    gen, data, losses = torch.Generator().manual_seed(2), torch.Generator().manual_seed(1), []
    for _ in range(2):
        v1, v2 = (torch.rand(6, 3, 16, 16, generator=data, dtype=torch.float64) for _ in "12")
        net.train()
        with sharded(6, w) as shard:
            if shard is not None:
                v1, v2 = shard.take(v1), shard.take(v2)
            loss, _ = PRETRAIN_METHODS.get(method).step(net, v1, v2, ContrastiveAttack(steps=2),
                                                         gen)
            opt.zero_grad()
            loss.backward()
        all_reduce_grads(net.trainable_parameters(), w, weight=1.0)
        opt.step()
        losses.append(loss.detach())
    return {"losses": torch.stack(losses), "net": net.state_dict()}


@pytest.mark.parametrize("method", ["a2s", "dual-bn"])
def test_pretraining_steps_on_two_ranks_equal_one_process(tmp_path, method):
    """NT-Xent of the global batch (gathered with its gradient), the contrastive attack on it with
    the global batch's starts (a2s: one view; dual-bn: both views, through either batch norm),
    batch norm over the global batch: two steps on two ranks of 3 images each are one process's
    (measured: 3e-15; each rank's loss is the global one)."""
    one = _encoder_steps(World(), method)
    for got in _spawn("_encoder_steps", tmp_path, method):
        assert float((one["losses"] - got["losses"]).abs().max()) < 1e-12
        assert _max_diff(one["net"], got["net"]) < 1e-12


def _classifier_steps(w: World, method: str) -> dict:
    """The classifier trainer's steps (:meth:`ClassifierTrainer._step`: start_batch and
    ``_shard_step`` inside ``sharded``) on a resnet18 (batch norm), batches of 6 (3 + 3), 5
    (3 + 2) and 1 (1 + an empty slice, which still runs its passes for the others' batch norm)."""
    from robustlab.training import TrainConfig
    from robustlab.training.classifier.methods import MethodContext, build_method
    from robustlab.training.classifier.trainer import _shard_step

    torch.manual_seed(0)
    net = models.create("resnet18", num_classes=10, in_channels=3, width=0.125,
                        mean=(0.5,) * 3, std=(0.25,) * 3).double()
    live = w.size > 1 and convert_layers(net) > 0
    args = {"yopo": {"m": 2, "n": 2}}.get(method, {})
    cfg = TrainConfig(dataset="synthetic", model="resnet18", method=method, method_args=args)
    probe = type("Data", (), {"images": torch.zeros(2, 3, 16, 16, dtype=torch.uint8)})
    m = build_method(method, args, MethodContext(cfg, probe, 10, torch.device("cpu"), net))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    data, gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    for b in (6, 5, 1):
        x = torch.rand(b, 3, 16, 16, generator=data, dtype=torch.float64)
        y = torch.randint(0, 10, (b,), generator=data)
        net.train()
        with sharded(b, w) as shard:
            if shard is not None:
                x, y = shard.take(x), shard.take(y)
            if y.shape[0] or live:
                m.start_batch(x, y, gen)  # yopo: the global batch's start (one generator here)
            for r in range(m.replays):
                _shard_step(cfg, net, m, opt, x, y, gen, torch.device("cpu"), b, w,
                            zero=r == 0, reduce=r == m.replays - 1, global_layers=live)
            opt.step()
    return {"net": net.state_dict()}


@pytest.mark.parametrize("method", ["standard", "yopo"])
def test_classifier_steps_with_batch_norm_on_two_ranks_equal_one_process(tmp_path, method):
    """Global batch norm in the classifier trainer: each rank back-propagates its share of the
    global mean loss (so the statistics' gradient, summed over ranks by batch norm's backward, is
    weighted right), uneven and empty slices included: weights, running statistics and momentum
    after three steps are one process's (measured: 1.5e-14). YOPO's start is drawn for the global
    batch (shard_start) and its adjoint is of this rank's share of the loss."""
    one = _classifier_steps(World(), method)
    for got in _spawn("_classifier_steps", tmp_path, method):
        assert _max_diff(one["net"], got["net"]) < 1e-12


# ---------------------------------------------------------------- whole runs under torchrun
# float32 runs through the CLI. Settings where one process is the exact reference: small-cnn
# (no batch norm) for pre-training; batch norm where it cannot be avoided (the purifier's G and D,
# dual-bn) with few steps, since float32 rounding (the one process's own batch norm is not exact)
# grows step by step. Each tolerance states the difference measured.

PRETRAIN = ["pretrain", "--dataset", "synthetic", "--size", "16", "--model", "small-cnn",
            "--width", "0.25", "--epochs", "1", "--batch-size", "12", "--subset", "36",
            "--optimizer", "sgd", "--lr", "0.5", "--steps", "2", "--seed", "1", "--val", "0",
            "--no-progress", "--set", "model_kwargs.input_size=16"]
_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(args, *, nproc: int = 2, env: dict | None = None,
              ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                          str(nproc), "--master_port", str(free_port()), "-m", "robustlab.cli",
                          "--", *args], capture_output=True, text=True, timeout=300,
                         env={**_ENV, **(env or {})})
    assert (res.returncode == 0) == ok, res.stderr[-3000:]
    return res


# imported by every Python process started with this folder on PYTHONPATH: each rank's
# pre-training stops at the second batch of epoch 2 as Ctrl-C stops it (torchrun passes SIGINT on)
CTRL_C = '''
import os
if os.environ.get("RANK") is not None:
    import robustlab.training.contrastive.trainer as _trainer
    _batches, _calls = _trainer.image_batches, [0]

    def image_batches(*args, **kwargs):
        _calls[0] += 1
        for i, x in enumerate(_batches(*args, **kwargs)):
            if _calls[0] == 2 and i == 1:
                raise KeyboardInterrupt
            yield x

    _trainer.image_batches = image_batches
'''


def _two_machines(args) -> list[str]:
    """Two torchrun agents, one process each, meeting at a c10d rendezvous on this machine as two
    machines would; returns their outputs."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                               "--node_rank", str(node), "--nproc_per_node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                               "-m", "robustlab.cli", "--", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ENV)
             for node in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


def _one(args) -> None:
    from robustlab.cli import main

    assert main(list(args)) == 0


def _weights(path) -> dict:
    return {k: v for k, v in load_file(str(path)).items() if v.is_floating_point()}


def _metrics(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _same_metrics(a: list[dict], b: list[dict], rel: float = 1e-5) -> None:
    """Two runs' metrics lines agree (times aside)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        keys = set(x) - {"seconds", "images_per_second", "val_seconds"}
        assert keys == set(y) - {"seconds", "images_per_second", "val_seconds"}
        for k in keys:
            assert y[k] == pytest.approx(x[k], rel=rel, abs=1e-7), k


@pytest.mark.parametrize("method", ["simclr", "a2s"])
def test_pretraining_under_torchrun_matches_one_process(tmp_path, method):
    """Two processes, 6 of each batch of 12 images, 3 steps: the global NT-Xent (and for a2s the
    attack on it, with the global batch's random starts) gives the weights, momentum and metrics of
    one process (measured: 2e-8, against weights that moved 7e-3 from their start)."""
    args = PRETRAIN + ["--method", method]
    _one(args + ["--out", str(tmp_path / "one")])
    res = _torchrun(args + ["--out", str(tmp_path / "two")])
    assert _max_diff(_weights(tmp_path / "one/last.safetensors"),
                     _weights(tmp_path / "two/last.safetensors")) < 1e-6
    _same_metrics(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"))  # one line: rank 0's
    assert res.stdout.count('"encoder"') == 1  # every process returns the final line, one prints


def test_dual_bn_under_torchrun_matches_one_process(tmp_path):
    """dual-bn on a resnet18 (batch norm everywhere, two branches of it): one step of 12 images on
    two processes equals one process's (measured: 3e-6, against a step of 4e-2)."""
    args = [a if a != "small-cnn" else "resnet18" for a in PRETRAIN[:-2]]
    args = args + ["--method", "dual-bn", "--subset", "12", "--lr", "0.05", "--width", "0.125"]
    _one(args + ["--out", str(tmp_path / "one")])
    _torchrun(args + ["--out", str(tmp_path / "two")])
    assert _max_diff(_weights(tmp_path / "one/last.safetensors"),
                     _weights(tmp_path / "two/last.safetensors")) < 1e-5
    _same_metrics(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"))
    assert models.load(tmp_path / "two/encoder.safetensors").robustlab_spec["name"] == "resnet18"


def test_pretraining_interrupted_and_resumed_under_torchrun_matches_one_process(tmp_path):
    """Ctrl-C in epoch 2 of two processes keeps epoch 1; --resume on two processes then ends with
    the weights of two uninterrupted epochs in one process (rank 0 wrote the state, both read
    it)."""
    args = PRETRAIN + ["--method", "simclr", "--subset", "24", "--epochs", "2"]
    _one(args + ["--out", str(tmp_path / "one")])
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook/sitecustomize.py").write_text(CTRL_C)
    hook = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "hook"), os.environ.get("PYTHONPATH",
                                                                                  "")])}
    res = _torchrun(args + ["--out", str(tmp_path / "two")], env=hook, ok=False)
    assert res.stderr.count("interrupted (the last finished epoch is saved") == 2  # each rank
    assert json.loads((tmp_path / "two/last.json").read_text())["epoch"] == 1
    _torchrun(args + ["--resume", "--out", str(tmp_path / "two")])
    assert _max_diff(_weights(tmp_path / "one/last.safetensors"),
                     _weights(tmp_path / "two/last.safetensors")) < 1e-6
    assert [m["epoch"] for m in _metrics(tmp_path / "two")] == [1, 2]


def test_pretraining_on_two_machines_matches_one_process(tmp_path):
    """Two torchrun agents meeting at a c10d rendezvous endpoint, as two machines would."""
    args = PRETRAIN + ["--method", "simclr"]
    _one(args + ["--out", str(tmp_path / "one")])
    outs = _two_machines(args + ["--out", str(tmp_path / "two")])  # two jobs: --out's lock refuses
    assert sum(o.count('"encoder"') for o in outs) == 1  # both ranks returned, rank 0 printed
    assert _max_diff(_weights(tmp_path / "one/last.safetensors"),
                     _weights(tmp_path / "two/last.safetensors")) < 1e-6


def test_classifier_training_on_two_machines_matches_one_process(tmp_path):
    """``robustlab train`` across two "machines" (c10d rendezvous), uneven shards (63 + 64)."""
    args = ["train", "--dataset", "synthetic", "--model", "small-cnn", "--width", "0.25",
            "--epochs", "1", "--optimizer", "sgd", "--lr", "0.05", "--subset", "200",
            "--batch-size", "127", "--val", "0", "--seed", "3", "--no-progress"]
    _one(args + ["--out", str(tmp_path / "one")])
    outs = _two_machines(args + ["--out", str(tmp_path / "two")])
    assert _max_diff(_weights(tmp_path / "one/model.safetensors"),
                     _weights(tmp_path / "two/model.safetensors")) < 2e-6
    assert sum(o.count('"out"') for o in outs) == 1  # rank 0 prints


@pytest.mark.parametrize("subset, lr, tol", [(64, "0.05", 1e-4), (65, "0.001", 2e-4)],
                         ids=["even", "trailing-1"])
def test_classifier_with_batch_norm_under_torchrun_matches_one_process(tmp_path, subset, lr, tol):
    """``robustlab train`` of a resnet18 (batch norm) on two processes: batch norm over the global
    batch, so the weights and running statistics are one process's. Even: batches of 32 (16 + 16),
    two SGD steps at lr 0.05 moving the weights by 3e-2: 2.6e-5 measured (float32 rounding, which
    batch norm amplifies step by step). Trailing-1: a last batch of one image (rank 1's slice
    empty: it still runs its passes, or rank 0's batch norm would wait for it forever); that
    image's statistics amplify rounding most, so lr 1e-3: 4.6e-5 measured (in float64 the steps
    are exact: test_classifier_steps_with_batch_norm_on_two_ranks_equal_one_process)."""
    args = ["train", "--dataset", "synthetic", "--model", "resnet18", "--width", "0.125",
            "--epochs", "1", "--optimizer", "sgd", "--lr", lr, "--subset", str(subset),
            "--batch-size", "32", "--val", "0", "--seed", "3", "--no-progress"]
    _one(args + ["--out", str(tmp_path / "one")])
    _torchrun(args + ["--out", str(tmp_path / "two")])
    one, two = (load_file(str(tmp_path / f"{r}/model.safetensors")) for r in ("one", "two"))
    assert _max_diff({k: v for k, v in one.items() if v.is_floating_point()}, two) < tol
    _same_metrics(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"))


def test_pretraining_with_the_yopo_adversary_under_torchrun_matches_one_process(tmp_path):
    """a2s with --adversary yopo on two processes: YOPO's random start is the global batch's rows
    (shard_start), drawn from the epoch generator every rank shares, and its passes see the global
    NT-Xent, so the weights and momentum are one process's (measured: 1.5e-8)."""
    args = PRETRAIN + ["--method", "a2s", "--adversary", "yopo", "--yopo-m", "2", "--yopo-n", "2"]
    _one(args + ["--out", str(tmp_path / "one")])
    _torchrun(args + ["--out", str(tmp_path / "two")])
    assert _max_diff(_weights(tmp_path / "one/last.safetensors"),
                     _weights(tmp_path / "two/last.safetensors")) < 1e-6
    _same_metrics(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"))


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    """An untrained small-cnn for 16x16 images: the attack's extractor and the scored classifier."""
    path = tmp_path_factory.mktemp("ext") / "small_cnn.safetensors"
    torch.manual_seed(0)
    models.save(models.create("small-cnn", num_classes=10, in_channels=3, width=0.25,
                              input_size=16), path, dataset="synthetic")
    return path


@pytest.mark.parametrize("speed, tol", [([], 5e-6), (["--channels-last"], 2e-5)],
                         ids=["plain", "channels-last"])
def test_purifier_training_under_torchrun_matches_one_process(tmp_path, extractor, speed, tol):
    """B3 (unet-b + patchgan-b: batch norm and dropout) on 34 images in batches of 16 (8 + 8, and a
    last one of 1 + 1): G, D, every metric and the held-out scores of one process (weights:
    5e-7 measured, against 3e-4 moved by the three Adam steps); rank 0 writes the grid. With
    --channels-last against one channels_last process (whose dropout draws its masks in memory
    order, and GlobalDropout alike): 5e-6 measured."""
    args = ["train-purifier", "--dataset", "synthetic", "--extractor", str(extractor),
            "--width", "0.125", "--epochs", "1", "--subset", "34", "--steps", "2", "--val-n", "8",
            "--grid-n", "2", "--batch-size", "16", "--image-size", "16", "--seed", "1",
            "--no-progress", *speed]
    _one(args + ["--out", str(tmp_path / "one")])
    res = _torchrun(args + ["--out", str(tmp_path / "two")])
    assert res.stdout.count('"g_loss"') == 1  # rank 0 prints the final line
    for name in ("purifier", "critic"):
        assert _max_diff(_weights(tmp_path / f"one/{name}.safetensors"),
                         _weights(tmp_path / f"two/{name}.safetensors")) < tol, name
    _same_metrics(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"))
    assert (tmp_path / "two/grid_epoch1.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_pretraining_under_torchrun_matches_one_process(tmp_path):
    """The three trainings and the PGD sweep (sharded by the evaluation harness) on two processes:
    the runs' weights and the comparison table of one process; rank 0 writes and prints."""
    args = ["compare-pretraining", "--dataset", "synthetic", "--model", "small-cnn", "--width",
            "0.25", "--subset", "32", "--pretrain-epochs", "1", "--pretrain-batch-size", "16",
            "--pretrain-optimizer", "sgd", "--pretrain-lr", "0.5", "--pretrain-set", "steps=1",
            "--epochs", "1", "--batch-size", "16", "--eps", "0.02,0.1", "--pgd-steps", "2",
            "--n", "16", "--no-progress"]
    _one(args + ["--out", str(tmp_path / "one")])
    res = _torchrun(args + ["--out", str(tmp_path / "two")])
    for run, name in (("pretrain", "encoder"), ("finetuned", "model"), ("baseline", "model")):
        assert _max_diff(_weights(tmp_path / f"one/{run}/{name}.safetensors"),
                         _weights(tmp_path / f"two/{run}/{name}.safetensors")) < 1e-6, run
    one, two = (json.loads((tmp_path / f"{r}/comparison.json").read_text()) for r in ("one", "two"))
    assert one["table"] == two["table"]
    assert res.stdout.count("mean_difference_points") == 1


def test_pretraining_refuses_batches_smaller_than_the_processes():
    """A process without an image would skip the attack's collectives and hang the others."""
    from robustlab.errors import ConfigError
    from robustlab.training.contrastive.trainer import _check_world

    _check_world(3, World(0, 3))
    with pytest.raises(ConfigError, match=r"^contrastive pre-training over 3 processes needs "
                       r"batches of at least 3 images \(one per process\), and this run's are of "
                       r"2; raise batch_size \(or the number of images\) or start fewer "
                       r"processes$"):
        _check_world(2, World(1, 3))
