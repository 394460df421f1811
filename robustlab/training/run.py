"""The run scaffold every trainer shares: run folder, resume, per-epoch seeds, the epoch loop,
timing, finite weights, and what is written after each epoch.

A trainer is a :class:`Trainer`: it names the files its weights depend on, builds its parts,
trains one epoch and writes its own files. :func:`run_training` does the rest, alike for all::

    RunDir(out)                      lock; refuse a different run; a failed start leaves no files
      depend(...), build(), create() nothing is written before every part is built
      resume_from(...)               the saved modules, optimisers and ``meta``
      for each epoch left:
        seeds                        stream 1: global draws (dropout); the epoch generator: data
                                     order, augmentations, attack starts
        start_epoch, train_epoch     "seconds" times these two, with the check below
        finite weights               TrainingDiverged before anything of the epoch is saved
        after_epoch                  validation, guards, monitors; may ask to stop
        metrics line, trainer files, last.* (rank 0 only), commit_epoch

Every draw of epoch e comes from (seed, e) and the state saved after each epoch holds every
module and optimiser, so a run resumed after an interruption ends with the weights of one that
never stopped. A run whose ``meta`` says "stopped" stays stopped on --resume.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from tqdm.auto import tqdm

from .._checks import check_finite_module
from ..distributed import World, barrier
from ..errors import TrainingDiverged
from ..runtime import epoch_seed
from .rundir import RunDir
from .state import save_state

log = logging.getLogger(__name__)


class Trainer:
    """One kind of training as :func:`run_training` drives it.

    Subclasses set ``kind`` (the run folder's kind) and ``cfg`` (a config dataclass with ``seed``
    and ``epochs``), and implement :meth:`build`, :meth:`state`, :meth:`watched`,
    :meth:`train_epoch` and :meth:`save`. ``world`` is the torchrun job (one process unless
    :meth:`build` says otherwise). ``meta`` holds JSON extras saved with every epoch's state; the
    scaffold sets it from the saved state (empty for a new run) before the first epoch.
    """

    kind: str
    cfg: Any
    world: World = World()
    meta: dict[str, Any]

    @property
    def epochs(self) -> int:
        """Passes over the data the run makes: ``cfg.epochs`` unless the trainer says otherwise
        (after :meth:`build`; Free-AT's replays divide them)."""
        return self.cfg.epochs

    def dependencies(self) -> Iterable[tuple[str, str | None]]:
        """(name, path) of the files the weights depend on, checked on resume (None: no file)."""
        return ()

    def build(self, out_dir: RunDir) -> None:
        """Load the data (recording it with ``out_dir.depend_data``) and build every part; write
        nothing: the scaffold creates the run folder once this returns."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """The modules and optimisers to resume, as ``save_state``/``load_state`` keywords."""
        raise NotImplementedError

    def watched(self) -> Mapping[str, torch.nn.Module]:
        """The trained modules, whose parameters and buffers must stay finite, by name."""
        raise NotImplementedError

    def start_epoch(self, epoch: int, gen: torch.Generator) -> None:
        """Before epoch ``epoch + 1`` (0-based ``epoch``), with that epoch's generator."""

    def train_epoch(self, epoch: int, gen: torch.Generator) -> dict[str, Any]:
        """One epoch's work; returns its metrics (the scaffold adds "epoch" and "seconds")."""
        raise NotImplementedError

    def after_epoch(self, epoch: int, metrics: dict[str, Any]) -> bool:
        """After the weights are checked: add metrics; True stops the run once this epoch is
        saved."""
        return False

    def save(self, out_dir: RunDir, metrics: dict[str, Any], epoch: int) -> None:
        """Write the trainer's own files of epoch ``epoch + 1`` (the scaffold writes the metrics
        line before and the state ``last.*`` after)."""
        raise NotImplementedError

    def weights_diverged(self, epoch: int, bad: list[str]) -> TrainingDiverged:
        """The error to raise when the tensors named ``bad`` became non-finite in the epoch."""
        return diverged(epoch, f"{', '.join(bad[:3])} became non-finite")


def run_training(trainer: Trainer, out: str | Path, *, resume: bool = False,
                 overwrite: bool = False) -> dict[str, Any]:
    """Run ``trainer`` into the run folder ``out`` (see the module docstring); returns the final
    metrics line (the last saved one when nothing is left to train)."""
    with RunDir(out, trainer.kind, trainer.cfg, resume=resume, overwrite=overwrite) as out_dir:
        for name, path in trainer.dependencies():
            out_dir.depend(name, path)
        trainer.build(out_dir)
        out_dir.create()  # only now: a run that fails to start leaves no files behind
        barrier(trainer.world)
        return _epochs(trainer, out_dir)


def _epochs(trainer: Trainer, out_dir: RunDir) -> dict[str, Any]:
    epochs = trainer.epochs
    start, trainer.meta = out_dir.resume_from(epochs, **trainer.state())
    done = out_dir.read_metrics()
    metrics: dict[str, Any] = dict(done[-1]) if done else {}
    if trainer.meta.get("stopped"):
        log.warning("%s was stopped: %s; nothing to resume (--overwrite starts again)",
                    out_dir.path, trainer.meta["stopped"])
        return metrics
    for epoch in range(start, epochs):
        metrics, stop = _epoch(trainer, out_dir, epoch)
        if stop:
            log.warning("stopping after epoch %d at a hook's request", epoch + 1)
            break
    return metrics


def _epoch(trainer: Trainer, out_dir: RunDir, epoch: int) -> tuple[dict[str, Any], bool]:
    seed = trainer.cfg.seed
    torch.manual_seed(epoch_seed(seed, epoch, stream=1))  # dropout and other global draws
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))  # order, augmentations, starts
    trainer.start_epoch(epoch, gen)
    t0 = time.perf_counter()
    metrics = trainer.train_epoch(epoch, gen)
    _check_weights(trainer, epoch)  # before scoring or saving them
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    stop = trainer.after_epoch(epoch, metrics)
    metrics = {"epoch": epoch + 1, **metrics}
    if trainer.world.main:
        with out_dir.saving(epoch):
            out_dir.append_metrics(metrics)
            trainer.save(out_dir, metrics, epoch)
            save_state(out_dir.path / "last", epoch=epoch + 1, extra=trainer.meta,
                       **trainer.state())
    barrier(trainer.world)
    out_dir.commit_epoch()
    return metrics, stop


def _check_weights(trainer: Trainer, epoch: int) -> None:
    """Parameters and buffers (batch-norm statistics) must be finite after the epoch; with
    several modules a name says whose (``critic.<key>``)."""
    watched = trainer.watched()
    bad = [key if len(watched) == 1 else f"{name}.{key}"
           for name, module in watched.items() for key in check_finite_module(module)]
    if bad:
        raise trainer.weights_diverged(epoch, bad)


def kept(epoch: int) -> str:
    """What is left on disk when epoch ``epoch + 1`` (0-based ``epoch``) diverges."""
    return f"the checkpoint of epoch {epoch} was kept" if epoch else "no checkpoint was written"


def diverged(epoch: int, what: str) -> TrainingDiverged:
    """The error for ``what`` (e.g. "the training loss became non-finite") in epoch
    ``epoch + 1``: what was kept, and what to try."""
    return TrainingDiverged(
        f"{what} in epoch {epoch + 1}; the run stopped and {kept(epoch)}. Lower the learning "
        "rate (or use --grad-clip) and start again with --overwrite.")


def progress_bar(batches: Iterable, total: int, desc: str, show: bool) -> tqdm:
    """The mini-batch progress bar of an epoch (gone once the epoch ends)."""
    return tqdm(batches, total=total, desc=desc, disable=not show, leave=False,
                dynamic_ncols=True)
