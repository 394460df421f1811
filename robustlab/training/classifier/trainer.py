"""The one classifier trainer: a fixed loop, a pluggable method, resumable from its last epoch.

Several processes (torchrun): every rank draws the same global batches and trains on its slice;
gradients are combined with one all-reduce per step, each slice weighted by its size (so uneven
slices and a last batch smaller than the world give the weights of one process), and batch-norm
statistics are averaged after each epoch; only rank 0 writes.

Reproducibility: every epoch draws its data order, augmentations, attack starts and dropout masks
from generators seeded by (seed, epoch), and the state saved after each epoch holds the model and
optimiser. So a run interrupted and resumed ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import torch
from tqdm.auto import tqdm

from ... import data as rl_data
from ... import models as rl_models
from ..._checks import check_finite_module
from ...distributed import (World, all_reduce_grads, all_sum, all_sum_named, average_buffers,
                           barrier, broadcast_module, device_for, world)
from ...errors import CheckpointError, ConfigError, TrainingDiverged
from ...metrics import accuracy
from ...runtime import amp_context, epoch_seed, resolve_device
from ..checks import check_names
from .config import TrainConfig
from .guards import build_guards
from .methods import METHODS, MethodContext, build_method, check_method_args
from ..optim import build_optimizer, lr_factor, set_lr
from ..rundir import RunDir
from ..state import has_state, load_state, save_state

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


def prepare_data(cfg: TrainConfig, data_root: str | None):
    """(train, val) for a config: validation is held out of the train split before ``subset``."""
    full = rl_data.load(cfg.dataset, "train", root=data_root)
    train, val = (rl_data.split(full, cfg.val, seed=cfg.seed) if cfg.val else (full, None))
    if cfg.subset is not None:
        train = rl_data.take(train, cfg.subset, seed=cfg.seed)
    return train, val


def build_model(cfg: TrainConfig, info) -> torch.nn.Module:
    # model_kwargs may override the dataset's statistics (e.g. ImageNet's for pretrained weights)
    kwargs = {"mean": info.mean, "std": info.std, **cfg.model_kwargs}
    model = rl_models.create(cfg.model, num_classes=info.num_classes, in_channels=info.channels,
                             width=cfg.width, **kwargs)
    if cfg.init:
        init_from(model, cfg.init)
    return model


def freeze_body(model: torch.nn.Module) -> None:
    """Linear probe: only the last nn.Linear learns (batch-norm statistics are frozen per epoch)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no linear layer to probe")
    head = linears[-1]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)


def init_from(model: torch.nn.Module, path: str) -> None:
    """Start from the weights of a saved checkpoint (e.g. a pre-trained encoder) of the same
    architecture; a different backbone is refused with what differs and how to ask for it."""
    try:
        source = rl_models.load(path, kind="classifier")
    except CheckpointError as exc:
        raise CheckpointError(f"--init: {exc}") from None
    want = getattr(model, "robustlab_spec", {})
    have = getattr(source, "robustlab_spec", {})
    keys = ("width", "in_channels", "num_classes")
    diffs = [k for k in keys if want.get("kwargs", {}).get(k) != have.get("kwargs", {}).get(k)]
    if want.get("name") != have.get("name") or diffs:
        got = ", ".join(f"{k} {have.get('kwargs', {}).get(k)}" for k in keys)
        asked = ", ".join(f"{k} {want.get('kwargs', {}).get(k)}" for k in keys)
        raise CheckpointError(
            f"the backbone does not match: --init {path} holds a {have.get('name')} ({got}) but "
            f"this run builds a {want.get('name')} ({asked}); train with --model "
            f"{have.get('name')} --width {have.get('kwargs', {}).get('width')} on a dataset with "
            "the same channels and classes, or pick another checkpoint")
    try:
        model.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"--init {path} does not fit the requested model: "
                              f"{str(exc).splitlines()[0]}") from None


def train(cfg: TrainConfig, out: str | Path, *, data_root: str | None = None,
          device: str | torch.device | None = "auto", resume: bool = False, overwrite: bool = False,
          progress: bool = True, hooks: Sequence[EpochHook] = ()) -> dict[str, Any]:
    """Train a classifier as ``cfg`` says and write the run to ``out``.

    Writes ``config.json``, ``metrics.jsonl`` (a line per epoch), ``model.safetensors`` with its
    JSON sidecar (the latest weights) and ``last.safetensors``/``last.json`` (the state to resume
    from). ``out`` is locked while the run lasts; a run that fails before its first epoch is
    saved leaves ``out`` as it was. Returns the final metrics line.
    """
    check_startable(cfg)
    with RunDir(out, "train", cfg, resume=resume, overwrite=overwrite) as out_dir:
        out_dir.depend("init checkpoint", cfg.init)
        out_dir.depend("source checkpoint", cfg.method_args.get("source"))
        return _train(cfg, out_dir, data_root, device, progress, hooks)


def check_startable(cfg: TrainConfig) -> None:
    """What can be checked before any data is loaded or file written: every name, the method's
    settings, and the checkpoints the run starts from."""
    check_names(cfg, METHODS)
    check_method_args(cfg.method, cfg.method_args)
    for what, path in (("--init", cfg.init), ("--source", cfg.method_args.get("source"))):
        if path:
            try:
                rl_models.read_meta(path)  # exists, and is a readable robustlab checkpoint
            except CheckpointError as exc:
                raise CheckpointError(f"{what}: {exc}") from None


def _train(cfg: TrainConfig, out_dir: RunDir, data_root, device, progress, hooks) -> dict[str, Any]:
    w = world()  # under torchrun: this process's rank; one process otherwise
    device = device_for(w, resolve_device(device))
    train_data, val_data = prepare_data(cfg, data_root)
    out_dir.depend_data("training data", train_data)
    torch.manual_seed(epoch_seed(cfg.seed, 0, stream=2))  # initial weights
    model = build_model(cfg, train_data).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward_model = torch.compile(model) if cfg.compile else model
    broadcast_module(model, w)
    if cfg.linear_probe:
        freeze_body(model)
    optimizer = build_optimizer(cfg, model.parameters())
    method = build_method(cfg.method, cfg.method_args,
                          MethodContext(cfg, train_data, train_data.num_classes, device))
    out_dir.create()  # only now: a run that fails to start leaves no files behind
    barrier(w)
    run = Run(cfg, out_dir, model, optimizer, train_data, val_data, device, method=method)
    hooks = [*build_guards(cfg, method, val_data is not None, epoch_seed(cfg.seed, 0, stream=3)),
             *hooks]
    augment = cfg.augment or train_data.default_augment
    start, run.meta = out_dir.resume_from(cfg.epochs, model=model, optimizer=optimizer)

    steps_per_epoch = -(-len(train_data) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    done = out_dir.read_metrics()
    metrics: dict[str, Any] = dict(done[-1]) if done else {}
    if run.meta.get("stopped"):
        log.warning("%s was stopped: %s; nothing to resume (--overwrite starts again)",
                    out_dir.path, run.meta["stopped"])
        return metrics
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(epoch_seed(cfg.seed, epoch, stream=1))  # dropout and other global draws
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        method.start_epoch(epoch, forward_model, gen)
        t0 = time.perf_counter()
        metrics = _train_epoch(cfg, forward_model, method, optimizer, train_data, augment, gen,
                               device, epoch, epoch * steps_per_epoch, total_steps,
                               progress and w.main, w)
        average_buffers(model, w)
        _check_weights(model, epoch)
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        if val_data is not None:
            t1 = time.perf_counter()
            metrics["val_acc"] = accuracy(model, val_data, device=device)
            metrics["val_seconds"] = round(time.perf_counter() - t1, 3)
        actions = {hook(run, epoch, metrics) for hook in hooks}
        if "restore" in actions:
            _restore_previous(run, epoch, metrics)
        metrics = {"epoch": epoch + 1, **metrics}
        if w.main:
            _save_epoch(run, metrics, epoch)
        barrier(w)
        out_dir.commit_epoch()
        if actions & {"stop", "restore"}:
            log.warning("stopping after epoch %d at a hook's request", epoch + 1)
            break
    return metrics


def _save_epoch(run: Run, metrics: dict[str, Any], epoch: int) -> None:
    """Metrics line, weights with sidecar, and the state to resume from (rank 0 only)."""
    out_dir = run.out
    with out_dir.saving(epoch):
        out_dir.append_metrics(metrics)
        rl_models.save(run.model, out_dir.path / "model.safetensors", dataset=run.config.dataset,
                       config=out_dir.config_dict, metrics=metrics)
        save_state(out_dir.path / "last", model=run.model, optimizer=run.optimizer,
                   epoch=epoch + 1, extra=run.meta)


def _check_weights(model: torch.nn.Module, epoch: int) -> None:
    """Parameters and buffers (batch-norm statistics) must be finite after the epoch."""
    bad = check_finite_module(model)
    if bad:
        _diverged(epoch, what=f"{', '.join(bad[:3])} became non-finite")


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


def _train_epoch(cfg, model, method, optimizer, data, augment, gen, device, epoch, step0,
                 total_steps, progress, w: World = World()) -> dict[str, Any]:
    model.train()
    if cfg.linear_probe:  # a frozen body keeps its batch-norm statistics too
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    sums: dict[str, torch.Tensor] = {}
    n_seen, correct = 0, torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    batches = rl_data.batches(data, cfg.batch_size, shuffle=True, generator=gen, augment=augment,
                              device=device)
    bar = tqdm(batches, total=-(-len(data) // cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not progress, leave=False, dynamic_ncols=True)
    lr = cfg.lr
    for i, (x, y) in enumerate(bar):
        global_b, step_gen = y.shape[0], _step_generator(gen, i, w)
        if w.size > 1:  # every rank draws the same global batch and trains on its slice, which
            x, y = x[w.rank::w.size], y[w.rank::w.size]  # may be shorter than others', or empty
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = set_lr(optimizer, cfg.lr, lr_factor(cfg, step0 + i, total_steps))
        out = _shard_step(cfg, model, method, optimizer, x, y, step_gen, device, global_b, w)
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if out is None:  # an empty shard: nothing to count
            continue
        b = y.shape[0]
        n_seen += b
        loss_sum += out.loss.detach().float() * b
        correct += (out.logits.detach().argmax(1) == y).sum()
        for k, v in out.stats.items():
            sums[k] = sums.get(k, 0) + v.detach().float() * b
        if (i + 1) % _CHECK_EVERY == 0:
            _check_finite(loss_sum, epoch)
            bar.set_postfix(loss=f"{float(loss_sum) / n_seen:.3f}",
                            acc=f"{float(correct) / n_seen:.3f}", lr=f"{lr:.2g}")
    totals = all_sum(torch.stack([loss_sum.float(), correct.float(),
                                  torch.tensor(float(n_seen), device=device)]), w)
    loss_sum, correct, n_seen = totals[0], totals[1], int(totals[2])
    sums = all_sum_named(sums, w, device)  # a rank whose shards were all empty has no names
    _check_finite(loss_sum, epoch)
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # the last step's update
        _diverged(epoch)
    metrics = {"lr": lr, "train_loss": float(loss_sum) / max(n_seen, 1),
               "train_acc": float(correct) / max(n_seen, 1)}
    metrics.update({k: float(v) / max(n_seen, 1) for k, v in sums.items()})
    return metrics


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


def _shard_step(cfg, model, method, optimizer, x, y, gen, device, global_b: int, w: World):
    """This rank's gradient for one global batch of ``global_b`` samples, combined over ranks;
    returns the method's StepOutput, or None for an empty shard.

    Methods return a mean over their (local) batch, so each rank's gradient is weighted by its
    share ``b / global_b`` and the ranks' gradients summed: the gradient of the global batch's
    mean, however unevenly it split. An empty shard (a trailing batch smaller than the number of
    processes) runs no forward pass (batch norm cannot normalise zero samples) but still joins the
    all-reduce, with zero gradients.
    """
    out = None
    if y.shape[0]:
        with amp_context(cfg.amp, device):
            out = method.loss(model, x, y, gen)
    optimizer.zero_grad(set_to_none=True)
    if out is not None:
        out.loss.backward()
    all_reduce_grads(model.parameters(), w, weight=y.shape[0] / global_b)
    return out


def _check_finite(loss_sum: torch.Tensor, epoch: int) -> None:
    if not torch.isfinite(loss_sum):
        _diverged(epoch)


def _diverged(epoch: int, what: str = "the training loss became non-finite") -> NoReturn:
    """Stop the run: a loss or a weight became non-finite in epoch ``epoch + 1``."""
    kept = f"the checkpoint of epoch {epoch} was kept" if epoch else "no checkpoint was written"
    raise TrainingDiverged(
        f"{what} in epoch {epoch + 1}; the run stopped and "
        f"{kept}. Lower the learning rate (or use --grad-clip) and start again with "
        "--overwrite.")
