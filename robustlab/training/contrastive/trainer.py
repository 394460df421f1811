"""Contrastive pre-training (SimCLR, ACL A2A/A2S/dual-BN): a resumable loop that never reads labels.

Writes to its run directory (the classifier trainer's :class:`RunDir` and state format):
``config.json``, ``metrics.jsonl`` (a line per epoch with the mean NT-Xent loss and its curve over
the epoch), ``encoder.safetensors``/``encoder.json`` (a plain classifier checkpoint of the backbone,
its final Linear untrained, which ``robustlab train --init`` loads) and ``last.*`` (resume state).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator, NoReturn

import torch
from tqdm.auto import tqdm

from ... import models as rl_models
from ..._checks import check_finite_module
from ...data.presets import refuse_flips
from ...distributed import require_single_process
from ...errors import InputError, TrainingDiverged
from ...runtime import amp_context, epoch_seed, resolve_device
from ..checks import check_names
from .config import PretrainConfig
from .projection import ProjectionModel, contrastive_preset
from .dual_bn import convert_dual_bn, export_branch
from .methods import PRETRAIN_METHODS, ContrastiveAttack
from ..optim import build_optimizer, lr_factor, set_lr
from ..rundir import RunDir
from ..state import save_state
from ..classifier.trainer import prepare_data

log = logging.getLogger(__name__)
_CURVE_POINTS = 10  # the NT-Xent curve in metrics.jsonl: mean loss over each tenth of an epoch


def image_batches(data, batch_size: int, generator: torch.Generator,
                  device: torch.device) -> Iterator[torch.Tensor]:
    """One shuffled epoch of float (B, C, H, W) images in [0, 1], never touching the labels.

    A trailing incomplete batch is dropped when there is at least one full batch (every step then
    has the same number of negatives, as in SimCLR).
    """
    n = len(data)
    if n < 2:
        raise InputError(f"contrastive pre-training needs at least 2 images, got {n}")
    order = torch.randperm(n, generator=generator, device=generator.device).cpu()
    stop = n - n % batch_size if n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size].to(data.images.device)
        yield data.images.index_select(0, idx).to(device).to(torch.float32).div_(255)


def build_encoder(cfg: PretrainConfig, data) -> torch.nn.Module:
    """The backbone: the classifier ``cfg.model`` built for ``data`` exactly as the trainer does."""
    kwargs = {"mean": data.mean, "std": data.std, **cfg.model_kwargs}
    return rl_models.create(cfg.model, num_classes=data.num_classes, in_channels=data.channels,
                            width=cfg.width, **kwargs)


def pretrain(cfg: PretrainConfig, out: str | Path, *, data_root: str | None = None,
             device: str | torch.device | None = "auto", resume: bool = False,
             overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Pre-train ``cfg.model`` as an encoder with contrastive method ``cfg.method``; write the run.

    Implements SimCLR (Chen et al. 2020) and ACL's A2A, A2S and dual-stream (Jiang et al. 2020).
    Returns the final metrics line (epoch, nt_xent, nt_xent_curve, lr, seconds, ...).
    """
    require_single_process("contrastive pre-training")
    check_names(cfg, PRETRAIN_METHODS)
    method = PRETRAIN_METHODS.get(cfg.method)
    # checks now, writes once everything is built: a run that fails to start leaves nothing
    with RunDir(out, "pretrain", cfg, resume=resume, overwrite=overwrite) as out_dir:
        return _pretrain(cfg, method, out_dir, data_root, device, progress)


def _pretrain(cfg: PretrainConfig, method, out_dir: RunDir, data_root, device,
              progress: bool) -> dict[str, Any]:
    device = resolve_device(device)
    data, _ = prepare_data(cfg, data_root)
    out_dir.depend_data("training images", data, labels=False)
    preset = cfg.augment or contrastive_preset(data)
    aug = refuse_flips(preset, data.flip_ok, data.name)
    torch.manual_seed(epoch_seed(cfg.seed, 0, stream=2))  # initial weights
    encoder = build_encoder(cfg, data)
    spec = encoder.robustlab_spec
    if method.dual_bn:
        convert_dual_bn(encoder)
    net = ProjectionModel(encoder, cfg.proj_dim).to(device)
    optimizer = build_optimizer(cfg, net.trainable_parameters())
    attack = ContrastiveAttack(cfg.eps, cfg.step_size, cfg.steps, cfg.temperature)
    out_dir.create()
    start, _ = out_dir.resume_from(cfg.epochs, model=net, optimizer=optimizer)
    done = out_dir.read_metrics()
    metrics: dict[str, Any] = dict(done[-1]) if done else {}
    steps_per_epoch = max(1, len(data) // cfg.batch_size)
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(epoch_seed(cfg.seed, epoch, stream=1))
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        t0 = time.perf_counter()
        metrics = _epoch(cfg, net, method, attack, optimizer, data, aug, gen, device, epoch,
                         epoch * steps_per_epoch, steps_per_epoch * cfg.epochs, progress)
        bad = check_finite_module(net)
        if bad:
            _diverged(epoch, f"{', '.join(bad[:3])} became non-finite")
        metrics = {"epoch": epoch + 1, **metrics, "seconds": round(time.perf_counter() - t0, 3)}
        with out_dir.saving(epoch):
            out_dir.append_metrics(metrics)
            save_encoder(net, spec, out_dir.path / "encoder.safetensors", dual_bn=method.dual_bn,
                         dataset=cfg.dataset, config=out_dir.config_dict, metrics=metrics,
                         augment=preset)
            save_state(out_dir.path / "last", model=net, optimizer=optimizer, epoch=epoch + 1)
        out_dir.commit_epoch()
    return metrics


def save_encoder(net: ProjectionModel, spec: dict[str, Any], path: Path, *, dual_bn: bool,
                 **meta: Any) -> Path:
    """Write the backbone as a plain classifier checkpoint (dual BN: the adversarial branch)."""
    encoder = net.encoder
    if dual_bn:
        with torch.random.fork_rng(devices=[]):  # building the plain model must not move the RNG
            kwargs = dict(spec["kwargs"])
            if "pretrained" in kwargs:  # its weights are overwritten at once: fetch nothing
                kwargs["pretrained"] = False
            plain = rl_models.create(spec["name"], **kwargs)
        encoder = export_branch(net.encoder, plain, "adv")
    return rl_models.save(encoder, path, role="contrastive encoder (final Linear untrained)",
                          bn_branch="adv" if dual_bn else "shared", **meta)


def _epoch(cfg, net, method, attack, optimizer, data, aug, gen, device, epoch, step0,
           total_steps, progress) -> dict[str, Any]:
    net.train()
    losses: list[torch.Tensor] = []
    sums: dict[str, torch.Tensor] = {}
    n_batches = max(1, len(data) // cfg.batch_size)
    bar = tqdm(image_batches(data, cfg.batch_size, gen, device), total=n_batches,
               desc=f"pretrain {cfg.method} {epoch + 1}/{cfg.epochs}", disable=not progress,
               leave=False, dynamic_ncols=True)
    lr = cfg.lr
    for i, x in enumerate(bar):
        v1, v2 = aug.fn(x, gen), aug.fn(x, gen)  # two augmented views, (B, C, H, W) in [0, 1]
        lr = set_lr(optimizer, cfg.lr, lr_factor(cfg, step0 + i, total_steps))
        with amp_context(cfg.amp, device):
            loss, stats = method.step(net, v1, v2, attack, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(loss.detach().float())
        for k, v in stats.items():
            sums[k] = sums.get(k, 0) + v.float()
        if (i + 1) % 25 == 0:
            _check_finite(torch.stack(losses[-25:]).sum(), epoch)
            bar.set_postfix(nt_xent=f"{float(losses[-1]):.3f}", lr=f"{lr:.2g}")
    curve = torch.stack(losses)
    _check_finite(curve.sum(), epoch)
    parts = curve.tensor_split(min(_CURVE_POINTS, len(losses)))
    return {"lr": lr, "nt_xent": float(curve.mean()),
            "nt_xent_curve": [round(float(p.mean()), 5) for p in parts],
            **{k: float(v) / len(losses) for k, v in sums.items()},
            "images": len(losses) * cfg.batch_size if len(data) >= cfg.batch_size else len(data)}


def _check_finite(total: torch.Tensor, epoch: int) -> None:
    if not torch.isfinite(total):
        _diverged(epoch, "the NT-Xent loss became non-finite")


def _diverged(epoch: int, what: str) -> NoReturn:
    raise TrainingDiverged(
        f"{what} in epoch {epoch + 1}; the run stopped and the encoder of epoch {epoch} was "
        "kept. Lower the learning rate (or set grad_clip) and start again with --overwrite.")
