"""The one classifier trainer: a fixed loop, a pluggable method, resumable from its last epoch.

The run itself (folder, resume, per-epoch seeds, the epoch loop, checks and writes) is the shared
scaffold of :mod:`robustlab.training.run`; this file builds the model and method, trains an epoch,
runs the after-epoch hooks (guards) and saves the model.

Several processes (torchrun): every rank draws the same global batches and trains on its slice
inside :func:`robustlab.shard.sharded`; gradients are combined with one all-reduce per step, each
slice weighted by its size (so uneven slices and a last batch smaller than the world give the
weights of one process). Batch norm and dropout are converted (:func:`robustlab.shard.
convert_layers`): batch norm normalises by the global batch's statistics and updates the same
running statistics on every rank, dropout keeps this rank's rows of one process's mask, so models
with either train as in one process too. A rank whose slice of a short last batch is empty then
still runs its passes (on no rows: the others' batch norm waits for its statistics). The methods'
own draws (attack starts) come from a generator per rank. Only rank 0 writes.

Reproducibility: every epoch draws its data order, augmentations, attack starts and dropout masks
from generators seeded by (seed, epoch), and the state saved after each epoch holds the model and
optimiser. So a run interrupted and resumed ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ... import data as rl_data
from ... import models as rl_models
from ...distributed import (World, all_reduce_grads, all_sum, all_sum_named, broadcast_module,
                           device_for, world)
from ...errors import CheckpointError
from ...metrics import accuracy
from ...runtime import (GradScaling, amp_context, channels_last, check_amp, compiled, epoch_seed,
                        resolve_device)
from ...shard import convert_layers, sharded
from ..checks import check_names
from ..splits import prepare_data
from .config import TrainConfig
from .guards import build_guards
from .methods import METHODS, MethodContext, build_method
from .setup import build_model, freeze_body
from ..optim import build_optimizer, lr_factor, set_lr
from ..rundir import RunDir
from ..run import Trainer, diverged, progress_bar, run_training
from ..state import has_state, load_state

log = logging.getLogger(__name__)
_CHECK_EVERY = 25  # mini-batches between finiteness checks (each check syncs the device)


@dataclass
class Run:
    """What hooks see after each epoch: the live objects of a run."""

    config: TrainConfig
    out: RunDir
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_data: Any
    val_data: Any
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)
    method: Any = None


# A hook runs after each epoch's metrics are known; it may add metrics and may return "stop", or
# "restore": put back the previous epoch's weights and optimiser state, then stop (a guard found
# the epoch harmful, e.g. catastrophic overfitting). A stopped run stays stopped on --resume.
EpochHook = Callable[[Run, int, dict[str, Any]], "str | None"]


def train(cfg: TrainConfig, out: str | Path, *, data_root: str | None = None,
          device: str | torch.device | None = "auto", resume: bool = False, overwrite: bool = False,
          progress: bool = True, hooks: Sequence[EpochHook] = (),
          data: Any = None) -> dict[str, Any]:
    """Train a classifier as ``cfg`` says and write the run to ``out``.

    ``data``: your own training data instead of ``cfg.dataset``'s train split (anything
    :func:`robustlab.data.as_dataset` takes: an ImageDataset, a torch Dataset or DataLoader,
    (x, y) tensors); ``cfg.dataset`` then only names it, and validation is held out of it.

    Writes ``config.json``, ``metrics.jsonl`` (a line per epoch), ``model.safetensors`` with its
    JSON sidecar (the latest weights) and ``last.safetensors``/``last.json`` (the state to resume
    from). ``out`` is locked while the run lasts; a run that fails before its first epoch is
    saved leaves ``out`` as it was. Returns the final metrics line.
    """
    check_startable(cfg, dataset=data is None)
    return run_training(ClassifierTrainer(cfg, data_root, device, progress, hooks, data), out,
                        resume=resume, overwrite=overwrite)


def check_startable(cfg: TrainConfig, *, dataset: bool = True) -> None:
    """What can be checked before any data is loaded or file written: every name (the dataset's
    unless the data is handed over), the method's settings, and the checkpoints the run starts
    from."""
    check_names(cfg, METHODS, dataset=dataset)  # the method's settings: checked when cfg was built
    for what, path in (("--init", cfg.init), ("--source", cfg.method_args.get("source"))):
        if path:
            try:
                rl_models.read_meta(path)  # exists, and is a readable robustlab checkpoint
            except CheckpointError as exc:
                raise CheckpointError(f"{what}: {exc}") from None


class ClassifierTrainer(Trainer):
    """The classifier's part of a run: model, method and hooks; one epoch; ``model.safetensors``."""

    kind = "train"

    def __init__(self, cfg: TrainConfig, data_root: str | None, device, progress: bool,
                 hooks: Sequence[EpochHook] = (), data: Any = None) -> None:
        self.cfg, self.data_root, self.device, self.progress = cfg, data_root, device, progress
        self.user_hooks, self.given = list(hooks), data

    @property
    def meta(self) -> dict[str, Any]:  # the hooks' state lives in run.meta, saved every epoch
        return self.run.meta

    @meta.setter
    def meta(self, value: dict[str, Any]) -> None:
        self.run.meta = value

    def dependencies(self):
        return [("init checkpoint", self.cfg.init),
                ("source checkpoint", self.cfg.method_args.get("source"))]

    def build(self, out_dir: RunDir) -> None:
        cfg = self.cfg
        self.world = w = world()  # under torchrun: this process's rank; one process otherwise
        device = device_for(w, resolve_device(self.device))
        check_amp(cfg.amp, device)
        self.scaling = GradScaling(cfg.amp, device)  # fp16: a gradient scaler
        train_data, val_data = (prepare_data(cfg, self.data_root) if self.given is None else
                                prepare_data(cfg, self.data_root, self.given))
        out_dir.depend_data("training data", train_data)
        train_data, val_data = (rl_data.place(d, device) for d in (train_data, val_data))  # GPU
        model = self._build_model(train_data, device)
        optimizer = build_optimizer(cfg, model.parameters())
        method = build_method(cfg.method, cfg.method_args,
                              MethodContext(cfg, train_data, train_data.num_classes, device, model))
        self.run = Run(cfg, out_dir, model, optimizer, train_data, val_data, device,
                       method=method)
        self.hooks = [*build_guards(cfg, method, val_data is not None,
                                    epoch_seed(cfg.seed, 0, stream=3)), *self.user_hooks]
        self.augment = cfg.augment or train_data.default_augment
        self.steps_per_epoch = -(-len(train_data) // cfg.batch_size)  # mini-batches per pass
        self._plan_replays(method)

    def _plan_replays(self, method) -> None:
        """Optimiser steps per mini-batch, passes over the data and the schedule's length. A
        method stepping after each of its m replays (Free-AT) makes ceil(epochs / m) passes, so the
        run takes as many optimiser steps as ``epochs`` epochs of standard training."""
        cfg, m = self.cfg, method.replays
        self.updates_per_batch = m if method.step_each_replay else 1
        self.passes = -(-cfg.epochs // m) if method.step_each_replay else cfg.epochs
        self.total_steps = self.steps_per_epoch * self.passes * self.updates_per_batch
        if method.step_each_replay and m > 1:
            log.info("method %s: --epochs %d with %d replays per mini-batch: %d passes over the "
                     "data, %d optimiser steps", cfg.method, cfg.epochs, m, self.passes,
                     self.total_steps)

    @property
    def epochs(self) -> int:
        """Passes over the data (``cfg.epochs``, or ceil(epochs / replays) for Free-AT)."""
        return self.passes

    def _build_model(self, train_data, device: torch.device) -> torch.nn.Module:
        """The model from its initial-weights stream, on ``device``, the same on every rank;
        ``self.forward_model`` is what the epochs run (compiled when asked)."""
        cfg = self.cfg
        torch.manual_seed(epoch_seed(cfg.seed, 0, stream=2))  # initial weights
        model = build_model(cfg, train_data).to(device)
        # torchrun: batch norm and dropout over the global batch (same state-dict keys)
        self.global_layers = self.world.size > 1 and convert_layers(model) > 0
        broadcast_module(model, self.world)
        channels_last(model, cfg.channels_last)
        self.forward_model = compiled(model, cfg.compile)
        if cfg.linear_probe:
            freeze_body(model)
        return model

    def state(self) -> dict[str, Any]:
        return {"model": self.run.model, "optimizer": self.run.optimizer}

    def watched(self) -> dict[str, torch.nn.Module]:
        return {"model": self.run.model}

    def start_epoch(self, epoch: int, gen: torch.Generator) -> None:
        self.scaling.load(self.run.meta.get("grad_scaler"))  # the scale a resumed run had
        self.run.method.start_epoch(epoch, self.forward_model, gen)

    def train_epoch(self, epoch: int, gen: torch.Generator) -> dict[str, Any]:
        cfg, run, w = self.cfg, self.run, self.world
        _train_mode(self.forward_model, cfg.linear_probe)
        tally = _Tally(run.device)
        batches = rl_data.batches(run.train_data, cfg.batch_size, shuffle=True, generator=gen,
                                  augment=self.augment, device=run.device)
        bar = progress_bar(batches, self.steps_per_epoch, f"epoch {epoch + 1}/{self.passes}",
                           self.progress and w.main)
        per_batch = self.updates_per_batch
        lr, step0 = cfg.lr, epoch * self.steps_per_epoch * per_batch
        for i, (x, y) in enumerate(bar):
            outs, y, lr = self._step(x, y, _step_generator(gen, i, w), step0 + i * per_batch)
            for out in outs:  # every replay counts (none for an empty shard)
                tally.add(out, y)
            if (i + 1) % _CHECK_EVERY == 0:
                _check_finite(tally.loss_sum, epoch)
                bar.set_postfix(**tally.postfix(), lr=f"{lr:.2g}")
        metrics = tally.metrics(lr, epoch, w)
        if run.method.replays > 1:  # metrics.jsonl says how the epoch was trained
            metrics.update(replays=run.method.replays,
                           optimizer_steps=(epoch + 1) * self.steps_per_epoch * per_batch)
        if not all(bool(torch.isfinite(p).all()) for p in self.forward_model.parameters()):
            raise diverged(epoch, "the training loss became non-finite")  # the last update
        if self.scaling.enabled:
            run.meta["grad_scaler"] = self.scaling.state()
        return metrics

    def _step(self, x, y, gen: torch.Generator, step: int):
        """One global batch whose first optimiser step is ``step`` of the run: this rank's slice,
        then the method's replays (one for most methods), each a forward-backward pass; the
        gradient is combined over ranks and stepped after every replay (Free-AT) or once, summed
        over them (YOPO). Returns (the replays' StepOutputs, none for an empty slice, the slice's
        labels, lr)."""
        cfg, w, method = self.cfg, self.world, self.run.method
        global_b = y.shape[0]
        with sharded(global_b, w) as shard:  # one process: nothing changes
            if shard is not None:  # every rank draws the same global batch and trains on its
                x, y = shard.take(x), shard.take(y)  # slice, which may be shorter, or empty
            x = channels_last(x, cfg.channels_last)
            if y.shape[0] or self.global_layers:  # an empty slice too, when the others' batch
                method.start_batch(x, y, gen)     # norm needs its statistics (_shard_step)
            outs, lr = self._replays(x, y, gen, step, global_b)
        return outs, y, lr

    def _replays(self, x, y, gen: torch.Generator, step: int, global_b: int):
        """The method's replays of one slice: (their StepOutputs, none for an empty slice, lr)."""
        cfg, run, w, method = self.cfg, self.run, self.world, self.run.method
        outs, lr, each = [], cfg.lr, method.step_each_replay
        for r in range(method.replays):
            first, last = each or r == 0, each or r == method.replays - 1
            if first:
                lr = set_lr(run.optimizer, cfg.lr,
                            lr_factor(cfg, step + (r if each else 0), self.total_steps))
            out = _shard_step(cfg, self.forward_model, method, run.optimizer, x, y, gen,
                              run.device, global_b, w, self.scaling, zero=first, reduce=last,
                              global_layers=self.global_layers)
            if out is not None:
                outs.append(out)
            if last:
                self.scaling.unscale(run.optimizer)  # fp16: true gradients before clip and step
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.forward_model.parameters(), cfg.grad_clip)
                self.scaling.step(run.optimizer)
        return outs, lr

    def after_epoch(self, epoch: int, metrics: dict[str, Any]) -> bool:
        """Validation accuracy, then the hooks; "restore" puts back the previous epoch."""
        run = self.run
        if run.val_data is not None:
            t1 = time.perf_counter()
            metrics["val_acc"] = accuracy(run.model, run.val_data, device=run.device)
            metrics["val_seconds"] = round(time.perf_counter() - t1, 3)
        actions = {hook(run, epoch, metrics) for hook in self.hooks}
        if "restore" in actions:
            _restore_previous(run, epoch, metrics)
        return bool(actions & {"stop", "restore"})

    def save(self, out_dir: RunDir, metrics: dict[str, Any], epoch: int) -> None:
        rl_models.save(self.run.model, out_dir.path / "model.safetensors",
                       dataset=self.cfg.dataset, config=out_dir.config_dict, metrics=metrics)


class _Tally:
    """An epoch's running sums on the device (read back only every _CHECK_EVERY batches)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.n_seen = device, 0
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, out, y: torch.Tensor) -> None:
        b = y.shape[0]
        self.n_seen += b
        self.loss_sum += out.loss.detach().float() * b
        self.correct += (out.logits.detach().argmax(1) == y).sum()
        for k, v in out.stats.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float() * b

    def postfix(self) -> dict[str, str]:
        return {"loss": f"{float(self.loss_sum) / self.n_seen:.3f}",
                "acc": f"{float(self.correct) / self.n_seen:.3f}"}

    def metrics(self, lr: float, epoch: int, w: World) -> dict[str, Any]:
        """The epoch's means over every rank's samples; a non-finite loss stops the run."""
        totals = all_sum(torch.stack([self.loss_sum.float(), self.correct.float(),
                                      torch.tensor(float(self.n_seen), device=self.device)]), w)
        loss_sum, correct, n_seen = totals[0], totals[1], int(totals[2])
        sums = all_sum_named(self.sums, w, self.device)  # a rank with only empty shards: none
        _check_finite(loss_sum, epoch)
        n = max(n_seen, 1)
        return {"lr": lr, "train_loss": float(loss_sum) / n, "train_acc": float(correct) / n,
                **{k: float(v) / n for k, v in sums.items()}}


def _train_mode(model: torch.nn.Module, linear_probe: bool) -> None:
    model.train()
    if linear_probe:  # a frozen body keeps its batch-norm statistics too
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def _restore_previous(run: Run, epoch: int, metrics: dict[str, Any]) -> None:
    """Put back the weights and optimiser state saved after the previous epoch (``last.*`` still
    holds them while the hooks run) and mark the run stopped."""
    stem = run.out.path / "last"
    if epoch > 0 and has_state(stem):
        load_state(stem, model=run.model, optimizer=run.optimizer)
        metrics["restored_epoch"] = epoch
        run.meta["stopped"] = (f"a guard restored the weights of epoch {epoch} after epoch "
                               f"{epoch + 1}")
    else:
        log.warning("a guard asked to restore the previous weights after the first epoch; there "
                    "are none, so the current ones are kept")
        run.meta["stopped"] = f"a guard stopped the run after epoch {epoch + 1}"


_STEP_STRIDE = 1_000_003  # per-step seeds of the methods' draws under torchrun


def _step_generator(gen: torch.Generator, step: int, w: World) -> torch.Generator:
    """The generator a method draws from in batch ``step`` of an epoch. One process: the epoch's.
    Several: one of this rank, seeded from (the epoch generator's seed, step, rank) without drawing
    from it. Shards then get different random starts, and a method's draws, sized by a shard that
    may be shorter than others', cannot put the epoch generators the ranks share (the later
    batches' augmentations, drawn alike on every rank) out of step."""
    if w.size == 1:
        return gen
    seed = ((gen.initial_seed() * _STEP_STRIDE + step) * w.size + w.rank) % 2**63
    return torch.Generator(device=gen.device).manual_seed(seed)


def _shard_step(cfg, model, method, optimizer, x, y, gen, device, global_b: int, w: World,
                scaling: GradScaling | None = None, *, zero: bool = True, reduce: bool = True,
                global_layers: bool = False):
    """This rank's gradient for one global batch of ``global_b`` samples, combined over ranks;
    returns the method's StepOutput, or None for an empty shard. ``zero``: start from zero
    gradients (else add to them: a replay summed into one step); ``reduce``: combine over ranks
    now (once per optimiser step). The method's ``after_backward`` runs after the backward pass.

    Methods return a mean over their (local) batch, so each rank's gradient is weighted by its
    share ``b / global_b`` and the ranks' gradients summed: the gradient of the global batch's
    mean, however unevenly it split. With ``global_layers`` (batch norm over the global batch,
    whose backward sums every rank's gradient of its statistics) the share weighs the loss before
    the backward pass instead, so that those parts are weighted too. An empty shard (a trailing
    batch smaller than the number of processes) joins the all-reduce with zero gradients; it runs
    its passes, on no rows, only with ``global_layers`` (whose forward and backward wait for
    every rank; plain batch norm cannot normalise zero samples).
    """
    b = y.shape[0]
    out = None
    if b or global_layers:
        with amp_context(cfg.amp, device):
            out = method.loss(model, x, y, gen)
    if zero:
        optimizer.zero_grad(set_to_none=True)
    if out is not None:
        loss = out.loss * (b / global_b) if global_layers else out.loss  # empty: zero gradients
        if scaling is None:
            loss.backward()
        else:
            scaling.backward(loss)  # fp16: the scaled loss (the same scale on every rank)
        with amp_context(cfg.amp, device):
            method.after_backward(model, x, y, out)  # e.g. the perturbation's step
    if reduce:
        all_reduce_grads(model.parameters(), w, weight=1.0 if global_layers else b / global_b)
    return out if b else None


def _check_finite(loss_sum: torch.Tensor, epoch: int) -> None:
    if not torch.isfinite(loss_sum):
        raise diverged(epoch, "the training loss became non-finite")
