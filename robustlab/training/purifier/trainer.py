"""The purifier trainer: the SSR report's self-supervised Pix2Pix training (Algorithm 2) and the
NRP baseline through the same loop, resumable from its last epoch.

No label is ever used for training: each mini-batch's adversaries are crafted on the fly by the
feature-distortion attack (Algorithm 1) against a fixed extractor, the critic sees (x', x) as real
and (x', G(x')) as fake, and the generator minimises the preset's weighted loss. After each epoch
the run writes a metrics line (losses, distances, and the feature-distortion robust accuracy of a
classifier with and without the purifier on held-out test images), an image grid, the
purifier/critic checkpoints and the resumable state. The run itself (folder, resume, per-epoch
seeds, epoch loop, checks and writes) is the shared scaffold of :mod:`robustlab.training.run`.

NRP (``arch="nrp"``, preset "NRP"; Naseer et al. 2020) choices its published description leaves
open, or that differ here: the SSR report's feature-distortion attack (VGG19 first blocks, eps 16,
step eps/8, 20 steps) replaces NRP's SSP attack (VGG16 relu3_3, eps 16, step 0.01) unless
``extractor``/``extractor_blocks``/``step_size`` say otherwise; a PatchGAN critic with BCE replaces
its relativistic critic; the weights are ESRGAN's (critic 5e-3, L1 pixel 1e-2, perceptual 1); the
RRDB depth is ``arch_kwargs["n_blocks"]`` (23 published; a few blocks on a CPU).

Several processes (torchrun): every rank draws the same global batch (order, augmentations, flips
from the shared epoch generator) and trains on its slice as :mod:`.steps` says (the attack's
random start, batch norm and dropout of G and D over the global batch, each rank's part of the
gradient summed): the weights equal one process's up to rounding. The epoch's metrics are summed
over ranks; the monitor's scores (fixed held-out images, G in eval mode) are computed alike on
every rank, which costs no wall time and gives every rank the numbers of one process. Only rank 0
writes.

GPU options: the training images live on the GPU as uint8 (:func:`robustlab.data.place`, after
their hash is taken on the host); ``channels_last`` puts G, D, the frozen networks and every batch
in that memory format; ``compile`` runs the training passes through compiled G, D and extractor(s)
(the monitor, a few images in eval mode per epoch, runs the plain ones), under torchrun too (the
global layers' ContextVar is a guard of the compiled graphs); ``amp`` autocasts every pass, fp16
with one gradient scaler per network (:mod:`.steps`).
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ... import data as rl_data
from ... import models as rl_models
from ...distributed import all_sum_named, broadcast_module, device_for, world
from ...errors import ConfigError, TrainingDiverged
from ...runtime import (GradScaling, amp_context, amp_dtype, channels_last, check_amp, compiled,
                        epoch_seed, resolve_device)
from ...shard import convert_layers, sharded
from .config import PurifierConfig
from .monitor import Monitor, first_images, held_out
from .setup import (augmenter, build_gan, check_channels, check_defended, check_purifier_shape,
                    check_sizes, load_frozen, training_data)
from .steps import GanParts, make_attack, train_step
from ..rundir import RunDir
from ..splits import given_data, load_split
from ..run import Trainer, kept, progress_bar, run_training

log = logging.getLogger(__name__)
_VAL_STREAM, _INIT_STREAM = 3, 2  # epoch_seed streams (the scaffold seeds 0 and 1 every epoch)


def train_purifier(cfg: PurifierConfig, out: str | Path, *, data_root: str | None = None,
                   device: str | torch.device | None = "auto", resume: bool = False,
                   overwrite: bool = False, progress: bool = True, data: Any = None,
                   test_data: Any = None) -> dict[str, Any]:
    """Train a purifier as ``cfg`` says (SSR report Alg. 2, or NRP) and write the run to ``out``.

    ``data`` / ``test_data``: your own training images and held-out images (anything
    :func:`robustlab.data.as_dataset` takes) instead of ``cfg.dataset``'s train and test splits;
    with ``data`` and ``val_n > 0``, ``test_data`` is needed too.

    Writes ``config.json``; ``metrics.jsonl`` (per epoch: g_loss, d_loss, loss_<term> for each
    weighted term, mse_purified = MSE(G(x'), x), mse_perturbed = MSE(x', x), seconds,
    images_per_second, and on the ``val_n`` held-out test images clean_acc, fd_acc (bare
    classifier), clean_acc_purified, fd_acc_purified (Purified(G, classifier)), val_mse_purified,
    val_mse_perturbed, val_n, val_seconds); ``grid_epoch{N}.png``;
    ``purifier.safetensors`` and ``critic.safetensors`` with JSON sidecars (loadable with
    ``robustlab.models.load``); and ``last.safetensors``/``last.json`` to resume from.

    Raises:
        ConfigError / InputError / CheckpointError for settings that cannot train (before ``out``
        is touched); TrainingDiverged when a loss, a weight or a buffer (e.g. a BatchNorm
        running_var) of G or D becomes non-finite (the previous epoch's files are kept).

    Returns:
        The final metrics line.
    """
    check_sizes(cfg, cfg.image_size)
    if data is not None and test_data is None and cfg.val_n:
        raise ConfigError("val_n > 0 scores the purifier on held-out images: with data=..., pass "
                          "test_data=... too, or set val_n=0")
    return run_training(PurifierTrainer(cfg, data_root, device, progress, data, test_data), out,
                        resume=resume, overwrite=overwrite)


class PurifierTrainer(Trainer):
    """The purifier's part of a run: frozen networks, G and D, an epoch of Alg. 2, the monitor's
    scores after it, and the grid and checkpoints."""

    kind = "train-purifier"

    def __init__(self, cfg: PurifierConfig, data_root: str | None, device, progress: bool,
                 data: Any = None, test_data: Any = None) -> None:
        self.cfg, self.data_root, self.device, self.progress = cfg, data_root, device, progress
        self.given, self.given_test = data, test_data

    def dependencies(self):
        return [(what.replace("_", " "), getattr(self.cfg, what))
                for what in ("extractor", "perceptual_extractor", "classifier")]

    def build(self, out_dir: RunDir) -> None:
        cfg = self.cfg
        self.world = w = world()  # under torchrun: this process's rank; one process otherwise
        self.device = device = device_for(w, resolve_device(self.device))
        check_amp(cfg.amp, device)
        extractor_net, perceptual_net, classifier = _frozen_nets(cfg, device)
        self.extractor_name = extractor_net.robustlab_meta.get("name")
        self.data = training_data(cfg, self.data_root, self.given)
        out_dir.depend_data("training images", self.data, labels=False)  # hashed on the host
        self.data = rl_data.place(self.data, device)  # CUDA: on the GPU, as uint8
        check_channels(extractor_net, cfg.extractor, self.data, "extractor")
        self.extractor = rl_models.feature_extractor(extractor_net, cfg.extractor_blocks)
        perceptual = _perceptual(cfg, self.extractor, perceptual_net, self.data)
        generator, critic = self._build_gan(classifier)
        self.preset, self.flip = augmenter(cfg, self.data)
        self.parts = _gan_parts(cfg, generator, critic, self.extractor, perceptual, device)
        self.amp_dtype = amp_dtype(cfg.amp)
        self.monitor = _monitor(cfg, self.data_root, device, self.data, self.extractor,
                                classifier, self.amp_dtype, self.given_test)

    def _build_gan(self, classifier):
        """G and D from the initial-weights stream, checked against the data and classifier."""
        cfg, data = self.cfg, self.data
        torch.manual_seed(epoch_seed(cfg.seed, 0, stream=_INIT_STREAM))  # initial weights
        generator, critic = build_gan(cfg, data.channels, self.device)
        check_purifier_shape(generator, first_images(data, 2, self.device), cfg.generator_name())
        if classifier is not None:
            check_defended(generator, classifier, cfg.classifier or cfg.extractor, data)
        for net in (generator, critic):
            if self.world.size > 1:  # batch norm and dropout over the global batch
                convert_layers(net)
            broadcast_module(net, self.world)
            channels_last(net, cfg.channels_last)
        return generator, critic

    def state(self) -> dict[str, Any]:
        parts = self.parts
        return {"modules": {"G": parts.generator, "D": parts.critic},
                "optimizers": {"G": parts.opt_g, "D": parts.opt_d}}

    def watched(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.parts.generator, "critic": self.parts.critic}

    def start_epoch(self, epoch: int, gen: torch.Generator) -> None:
        scalers = self.meta.get("grad_scaler") or {}  # fp16: the scales a resumed run had
        self.parts.scaling_g.load(scalers.get("G"))
        self.parts.scaling_d.load(scalers.get("D"))
        cfg = self.cfg  # the attack's random starts come from the epoch's generator
        self.attack = make_attack(self.parts.extractor, eps=cfg.eps, steps=cfg.steps,
                                  step_size=cfg.step_size, random_start=cfg.random_start,
                                  generator=gen, amp_dtype=self.amp_dtype)

    def train_epoch(self, epoch: int, gen: torch.Generator) -> dict[str, Any]:
        cfg, device, data = self.cfg, self.device, self.data
        sums: dict[str, Any] = {}
        n_seen = 0
        autocast = lambda: amp_context(cfg.amp, device)  # noqa: E731  (a no-op for amp none)
        batches = rl_data.batches(data, cfg.batch_size, shuffle=True, generator=gen,
                                  augment=self.preset, device=device)
        bar = progress_bar(batches, -(-len(data) // cfg.batch_size),
                           f"epoch {epoch + 1}/{cfg.epochs}", self.progress and self.world.main)
        for i, (x, _labels) in enumerate(bar):  # labels are never used (self-supervised)
            del _labels
            if self.flip is not None:
                x = self.flip(x, gen)  # (B, C, H, W): the global batch, alike on every rank
            where = f"epoch {epoch + 1}, mini-batch {i + 1}"
            with sharded(x.shape[0], self.world) as shard:
                if shard is not None:  # this rank's slice (empty if the batch is short)
                    x = shard.take(x)
                x = channels_last(x, cfg.channels_last)
                try:
                    stats = train_step(self.parts, x, attack=self.attack, autocast=autocast,
                                       where=where, shard=shard)
                except TrainingDiverged as exc:
                    raise TrainingDiverged(f"{exc}. {_kept(epoch)}") from None
            b = x.shape[0]
            if not b:  # an empty slice's means are NaN: it adds nothing
                continue
            n_seen += b
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else v) * b
            bar.set_postfix(g=f"{stats['g_loss']:.3f}")
        self._save_scalers()
        return self._means(sums, n_seen)

    def _means(self, sums: dict[str, Any], n_seen: int) -> dict[str, float]:
        """The epoch's means over every sample (of every rank)."""
        if self.world.size > 1:
            total = all_sum_named({**sums, " n": torch.tensor(float(n_seen))}, self.world,
                                  self.device)
            n_seen = int(total.pop(" n"))
            sums = {k: total[k] for k in [*sums, *sorted(set(total) - set(sums))]}  # one's order
        return {k: float(v) / max(n_seen, 1) for k, v in sums.items()}

    def _save_scalers(self) -> None:
        parts = self.parts
        if parts.scaling_g.enabled:
            self.meta["grad_scaler"] = {"G": parts.scaling_g.state(),
                                        "D": parts.scaling_d.state()}

    def after_epoch(self, epoch: int, metrics: dict[str, Any]) -> bool:
        metrics["images_per_second"] = round(len(self.data) / max(metrics["seconds"], 1e-9), 2)
        metrics.update(self.monitor.score(self.parts.generator))
        return False

    def weights_diverged(self, epoch: int, bad: list[str]) -> TrainingDiverged:
        """The losses can stay finite while a BatchNorm running_var overflows (e.g. at lr 1e6),
        and the saved purifier would then output NaN in eval mode."""
        more = " ..." if len(bad) > 4 else ""
        return TrainingDiverged(f"the weights became non-finite in epoch {epoch + 1} "
                                f"({', '.join(bad[:4])}{more}); the run stopped before saving "
                                f"them. {_kept(epoch)}")

    def save(self, out_dir: RunDir, metrics: dict[str, Any], epoch: int) -> None:
        cfg, parts, n = self.cfg, self.parts, epoch + 1
        self.monitor.grid(parts.generator, out_dir.path / f"grid_epoch{n}.png",
                          title=f"{cfg.generator_name()} epoch {n}: perturbed / purified / clean")
        meta = {"dataset": cfg.dataset, "image_size": cfg.image_size,
                "config": out_dir.config_dict, "metrics": metrics,
                "preset": cfg.preset_name() if cfg.weights is None else "custom",
                "loss_weights": asdict(cfg.loss_weights()),
                "extractor": {"checkpoint": cfg.extractor, "name": self.extractor_name,
                              "n_blocks": cfg.extractor_blocks},
                "attack": {"name": "feature-distortion", "eps": cfg.eps, "steps": cfg.steps,
                           "step_size": cfg.attack_step(), "random_start": cfg.random_start}}
        rl_models.save(parts.generator, out_dir.path / "purifier.safetensors", **meta)
        rl_models.save(parts.critic, out_dir.path / "critic.safetensors", **meta)


def _frozen_nets(cfg: PurifierConfig, device):
    """The attack's extractor network, the perceptual loss's own network (or None) and the
    scored classifier (None without val_n), frozen, in channels_last with --channels-last."""
    extractor_net = load_frozen(cfg.extractor, device, "extractor")
    perceptual_net = _perceptual_net(cfg, device)
    classifier = (load_frozen(cfg.classifier or cfg.extractor, device, "classifier")
                  if cfg.val_n else None)
    for net in (extractor_net, perceptual_net, classifier):
        if net is not None:
            channels_last(net, cfg.channels_last)
    return extractor_net, perceptual_net, classifier


def _gan_parts(cfg: PurifierConfig, generator, critic, extractor, perceptual, device) -> GanParts:
    """G, D, their Adam optimisers and gradient scalers, and the networks the passes run. With
    --compile those are compiled (the extractor once when it is the perceptual network too); the
    optimisers, state(), watched() and save() keep the plain modules (a compiled module's
    state-dict keys gain ``_orig_mod.``)."""
    betas, on = tuple(cfg.betas), cfg.compile
    run_extractor = compiled(extractor, on)
    run_perceptual = run_extractor if perceptual is extractor else compiled(perceptual, on)
    return GanParts(generator, critic, torch.optim.Adam(generator.parameters(), cfg.lr, betas),
                    torch.optim.Adam(critic.parameters(), cfg.lr, betas), cfg.loss_weights(),
                    run_extractor, run_perceptual, cfg.gan_mode, GradScaling(cfg.amp, device),
                    GradScaling(cfg.amp, device), compiled(generator, on), compiled(critic, on))


def _perceptual_net(cfg: PurifierConfig, device):
    """The perceptual loss's own network, when it is not the attack's extractor."""
    if cfg.perceptual_extractor is None and cfg.perceptual_blocks is None:
        return None
    return load_frozen(cfg.perceptual_extractor or cfg.extractor, device, "perceptual extractor")


def _perceptual(cfg: PurifierConfig, extractor, net, ds):
    if net is None:
        return extractor
    check_channels(net, cfg.perceptual_extractor or cfg.extractor, ds, "perceptual extractor")
    return rl_models.feature_extractor(net, cfg.perceptual_blocks or cfg.extractor_blocks)


def _monitor(cfg, data_root, device, train_data, extractor, classifier, amp_dtype,
             test_data=None) -> Monitor:
    attack = make_attack(extractor, eps=cfg.eps, steps=cfg.steps, step_size=cfg.step_size,
                         random_start=cfg.random_start, amp_dtype=amp_dtype,
                         generator=torch.Generator().manual_seed(
                             epoch_seed(cfg.seed, 0, stream=_VAL_STREAM)))
    if cfg.val_n:
        test = (load_split(cfg, "test", data_root, size=cfg.image_size) if test_data is None
                else given_data(cfg, test_data, size=cfg.image_size))
        x, y = held_out(test, cfg.val_n, seed=cfg.seed, device=device)
        return Monitor(channels_last(x, cfg.channels_last), y, attack, classifier, cfg.grid_n)
    return Monitor(channels_last(first_images(train_data, cfg.grid_n, device), cfg.channels_last),
                   None, attack, None, cfg.grid_n)


def _kept(epoch: int) -> str:
    """What is left after epoch ``epoch + 1`` diverged, and what to do."""
    left = kept(epoch)
    return (f"{left[0].upper()}{left[1:]}; lower the learning rate (lr) and start again with "
            "--overwrite.")
