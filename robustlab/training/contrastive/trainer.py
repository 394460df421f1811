"""Contrastive pre-training (SimCLR, ACL A2A/A2S/dual-BN): a resumable loop that never reads labels.

The run (folder, resume, per-epoch seeds, epoch loop, checks and writes) is the shared scaffold of
:mod:`robustlab.training.run`. It writes to its run directory:
``config.json``, ``metrics.jsonl`` (a line per epoch with the mean NT-Xent loss and its curve over
the epoch), ``encoder.safetensors``/``encoder.json`` (a plain classifier checkpoint of the backbone,
its final Linear untrained, which ``robustlab train --init`` loads) and ``last.*`` (resume state).

Several processes (torchrun): every rank draws the same global batch and its two augmented views,
and computes the method's step on its slice inside :func:`robustlab.shard.sharded`: NT-Xent (and
the contrastive attack maximising it) is the global batch's, batch norm normalises by the global
batch's statistics (SimCLR's "global BN": with per-device statistics a contrastive model can tell
the positive pair by the statistics of its own device, Chen et al. 2020), the attack's random
starts are the global batch's rows. The loss is then the same on every rank and each rank's
gradient is its part of the global one, so the parts are summed; only rank 0 writes. The weights
equal one process's up to rounding.

GPU options: the images live on the GPU as uint8 (:func:`robustlab.data.place`, after their hash
is taken on the host), ``channels_last`` puts the net and every view in that memory format,
``compile`` runs the method's passes (the attack's included) through the compiled net (dual BN:
a graph per branch; YOPO refuses it), ``amp`` autocasts them and the contrastive attack knows the
dtype (its step and projection stay float32); fp16 trains through a gradient scaler.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import torch

from ... import data as rl_data
from ... import models as rl_models
from ...data.presets import refuse_flips
from ...distributed import all_reduce_grads, broadcast_module, device_for, world
from ...errors import ConfigError, InputError, TrainingDiverged
from ...runtime import (GradScaling, amp_context, channels_last, check_amp, compiled, epoch_seed,
                        resolve_device)
from ...shard import convert_layers, sharded
from ..checks import check_names
from .config import PretrainConfig
from .projection import ProjectionModel, contrastive_preset
from .dual_bn import convert_dual_bn, export_branch
from .methods import PRETRAIN_METHODS, contrastive_attack
from ..optim import build_optimizer, lr_factor, set_lr
from ..rundir import RunDir
from ..run import Trainer, progress_bar, run_training
from ..splits import prepare_data

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
        # on the GPU already (robustlab.data.place), or an asynchronous copy from pinned memory
        batch = data.images.index_select(0, idx).to(device, non_blocking=True)
        yield batch.to(torch.float32).div_(255)


def build_encoder(cfg: PretrainConfig, data) -> torch.nn.Module:
    """The backbone: the classifier ``cfg.model`` built for ``data`` exactly as the trainer does."""
    kwargs = {"mean": data.mean, "std": data.std, **cfg.model_kwargs}
    return rl_models.create(cfg.model, num_classes=data.num_classes, in_channels=data.channels,
                            width=cfg.width, **kwargs)


def pretrain(cfg: PretrainConfig, out: str | Path, *, data_root: str | None = None,
             device: str | torch.device | None = "auto", resume: bool = False,
             overwrite: bool = False, progress: bool = True, data: Any = None) -> dict[str, Any]:
    """Pre-train ``cfg.model`` as an encoder with contrastive method ``cfg.method``; write the run.

    ``data``: your own images instead of ``cfg.dataset``'s train split (anything
    :func:`robustlab.data.as_dataset` takes; labels are never read).

    Implements SimCLR (Chen et al. 2020) and ACL's A2A, A2S and dual-stream (Jiang et al. 2020).
    Returns the final metrics line (epoch, nt_xent, nt_xent_curve, lr, seconds, ...).
    """
    check_names(cfg, PRETRAIN_METHODS, dataset=data is None)
    method = PRETRAIN_METHODS.get(cfg.method)
    # checks now, writes once everything is built: a run that fails to start leaves nothing
    return run_training(Pretrainer(cfg, method, data_root, device, progress, data), out,
                        resume=resume, overwrite=overwrite)


class Pretrainer(Trainer):
    """Pre-training's part of a run: encoder and projection head, an epoch, the encoder file."""

    kind = "pretrain"

    def __init__(self, cfg: PretrainConfig, method, data_root: str | None, device,
                 progress: bool, data: Any = None) -> None:
        self.cfg, self.method, self.data_root, self.given = cfg, method, data_root, data
        self.device, self.progress = device, progress

    def build(self, out_dir: RunDir) -> None:
        cfg = self.cfg
        self.world = w = world()  # under torchrun: this process's rank; one process otherwise
        self.device = device_for(w, resolve_device(self.device))
        check_amp(cfg.amp, self.device)
        self.scaling = GradScaling(cfg.amp, self.device)  # fp16: a gradient scaler
        self.data, _ = (prepare_data(cfg, self.data_root) if self.given is None else
                        prepare_data(cfg, self.data_root, self.given))
        out_dir.depend_data("training images", self.data, labels=False)  # hashed on the host
        self.data = rl_data.place(self.data, self.device)  # CUDA: on the GPU, as uint8
        _check_world(min(cfg.batch_size, len(self.data)), w)
        self.preset = cfg.augment or contrastive_preset(self.data)
        self.aug = refuse_flips(self.preset, self.data.flip_ok, self.data.name)
        torch.manual_seed(epoch_seed(cfg.seed, 0, stream=2))  # initial weights
        encoder = build_encoder(cfg, self.data)
        self.spec = encoder.robustlab_spec
        if self.method.dual_bn:
            convert_dual_bn(encoder)
        self.net = ProjectionModel(encoder, cfg.proj_dim).to(self.device)
        if w.size > 1:  # batch norm (and dropout) over the global batch; same state-dict keys
            convert_layers(self.net)
        broadcast_module(self.net, w)
        channels_last(self.net, cfg.channels_last)
        # the passes run through forward_net; optimiser, state and checkpoints keep the plain net
        self.forward_net = compiled(self.net, cfg.compile)
        self.optimizer = build_optimizer(cfg, self.net.trainable_parameters())
        probe = self.data.images[:2].to(self.device, torch.float32) / 255  # yopo: first layer
        self.attack = contrastive_attack(cfg, self.net, probe)
        self.steps_per_epoch = max(1, len(self.data) // cfg.batch_size)

    def state(self) -> dict[str, Any]:
        return {"model": self.net, "optimizer": self.optimizer}

    def watched(self) -> dict[str, torch.nn.Module]:
        return {"net": self.net}

    def start_epoch(self, epoch: int, gen: torch.Generator) -> None:
        self.scaling.load(self.meta.get("grad_scaler"))  # the scale a resumed run had

    def train_epoch(self, epoch: int, gen: torch.Generator) -> dict[str, Any]:
        cfg, net, optimizer = self.cfg, self.net, self.optimizer
        net.train()
        losses: list[torch.Tensor] = []
        sums: dict[str, torch.Tensor] = {}
        bar = progress_bar(image_batches(self.data, cfg.batch_size, gen, self.device),
                           self.steps_per_epoch, f"pretrain {cfg.method} {epoch + 1}/{cfg.epochs}",
                           self.progress and self.world.main)
        lr, step0 = cfg.lr, epoch * self.steps_per_epoch
        total_steps = self.steps_per_epoch * cfg.epochs
        for i, x in enumerate(bar):
            lr = set_lr(optimizer, cfg.lr, lr_factor(cfg, step0 + i, total_steps))
            loss, stats = self._step(x, gen)
            losses.append(loss.detach().float())
            for k, v in stats.items():
                sums[k] = sums.get(k, 0) + v.float()
            if (i + 1) % 25 == 0:
                _check_finite(torch.stack(losses[-25:]).sum(), epoch)
                bar.set_postfix(nt_xent=f"{float(losses[-1]):.3f}", lr=f"{lr:.2g}")
        if self.scaling.enabled:
            self.meta["grad_scaler"] = self.scaling.state()
        return self._summary(losses, sums, lr, epoch)

    def _step(self, x: torch.Tensor, gen: torch.Generator):
        """One global batch ``x`` (B, C, H, W): two views drawn for all of it (on every rank
        alike), the method on this rank's slice, the gradient summed over ranks, the update.
        Returns the method's (loss, stats): the global batch's on every rank."""
        cfg, w, optimizer = self.cfg, self.world, self.optimizer
        v1, v2 = self.aug.fn(x, gen), self.aug.fn(x, gen)  # two views, (B, C, H, W) in [0, 1]
        with sharded(x.shape[0], w) as shard:
            if shard is not None:  # this rank's rows (at least one: _check_world)
                v1, v2 = shard.take(v1), shard.take(v2)
            v1, v2 = channels_last(v1, cfg.channels_last), channels_last(v2, cfg.channels_last)
            with amp_context(cfg.amp, self.device):
                loss, stats = self.method.step(self.forward_net, v1, v2, self.attack, gen)
            optimizer.zero_grad(set_to_none=True)
            self.scaling.backward(loss)  # the global loss: its backward crosses ranks
        # each rank's gradient is its part of the global batch's: sum them
        all_reduce_grads(self.net.trainable_parameters(), w, weight=1.0)
        self.scaling.unscale(optimizer)  # fp16: true gradients before clipping and the step
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.scaling.step(optimizer)
        return loss, stats

    def _summary(self, losses: list[torch.Tensor], sums: dict[str, torch.Tensor], lr: float,
                 epoch: int) -> dict[str, Any]:
        """The epoch's mean NT-Xent loss, its curve over the epoch, and the method's stats."""
        curve = torch.stack(losses)
        _check_finite(curve.sum(), epoch)
        parts = curve.tensor_split(min(_CURVE_POINTS, len(losses)))
        n, batch = len(self.data), self.cfg.batch_size
        return {"lr": lr, "nt_xent": float(curve.mean()),
                "nt_xent_curve": [round(float(p.mean()), 5) for p in parts],
                **{k: float(v) / len(losses) for k, v in sums.items()},
                "images": len(losses) * batch if n >= batch else n}

    def save(self, out_dir: RunDir, metrics: dict[str, Any], epoch: int) -> None:
        save_encoder(self.net, self.spec, out_dir.path / "encoder.safetensors",
                     dual_bn=self.method.dual_bn, dataset=self.cfg.dataset,
                     config=out_dir.config_dict, metrics=metrics, augment=self.preset)

    def weights_diverged(self, epoch: int, bad: list[str]) -> TrainingDiverged:
        return TrainingDiverged(_message(epoch, f"{', '.join(bad[:3])} became non-finite"))


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


def _check_world(batch: int, w) -> None:
    """Every process needs an image of every batch: the attack's steps are collectives, which a
    process without images would skip."""
    if batch < w.size:
        raise ConfigError(f"contrastive pre-training over {w.size} processes needs batches of at "
                          f"least {w.size} images (one per process), and this run's are of "
                          f"{batch}; raise batch_size (or the number of images) or start fewer "
                          "processes")


def _check_finite(total: torch.Tensor, epoch: int) -> None:
    if not torch.isfinite(total):
        raise TrainingDiverged(_message(epoch, "the NT-Xent loss became non-finite"))


def _message(epoch: int, what: str) -> str:
    return (f"{what} in epoch {epoch + 1}; the run stopped and the encoder of epoch {epoch} was "
            "kept. Lower the learning rate (or set grad_clip) and start again with --overwrite.")
