"""What the purifier trainer measures after each epoch: the feature-distortion robust accuracy of
a classifier with and without the purifier on a fixed held-out set (the SSR report's Fig. 6), and
an image grid perturbed / purified / clean (its Fig. 3).

The held-out adversaries are crafted once, against the attack's extractor (not the purifier or the
classifier), from a fixed seed, so every epoch is scored on the same images.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ... import data as rl_data
from ...metrics import accuracy_on
from ...purifiers import Purified
from ...viz import save_image_rows

_BATCH = 256


class Monitor:
    """Fixed held-out images and their adversaries; scores a generator each epoch.

    Args:
        images: (N, C, H, W) float images in [0, 1] (on the device), with labels (N,) or None
            (then only distances are reported, e.g. for a grid drawn from training images).
        attack: x -> x' (the feature-distortion attack, seeded).
        classifier: the model scored (eval mode, frozen) or None.
        grid_n: how many of the images go into the grid.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None,
                 attack: Callable[[torch.Tensor], torch.Tensor], classifier: nn.Module | None,
                 grid_n: int) -> None:
        t0 = time.perf_counter()
        self.x = images
        self.y = labels
        self.x_adv = torch.cat([attack(x) for x in images.split(_BATCH)]) if len(images) else images
        self.classifier = classifier
        self.grid_n = min(grid_n, len(images))
        self.bare: dict[str, float] = {}
        if classifier is not None and labels is not None:
            self.bare = {"clean_acc": self._acc(classifier, self.x),
                         "fd_acc": self._acc(classifier, self.x_adv)}
        self.setup_seconds = round(time.perf_counter() - t0, 3)

    def _acc(self, model: nn.Module, x: torch.Tensor) -> float:
        return accuracy_on(model, x, self.y, batch_size=_BATCH)

    @torch.no_grad()
    def _purify(self, generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([generator(xb) for xb in x.split(_BATCH)])

    def score(self, generator: nn.Module) -> dict[str, Any]:
        """Metrics of ``generator`` (run in eval mode, mode restored): accuracies of the bare and
        purified classifier on clean and feature-distorted images, and pixel MSEs."""
        if not len(self.x):
            return {}
        t0 = time.perf_counter()
        was = generator.training
        generator.eval()
        try:
            purified = self._purify(generator, self.x_adv)
            out: dict[str, Any] = dict(self.bare)
            if self.bare:  # the defended model, as evaluation sees it
                defended = Purified(generator, self.classifier)
                out["clean_acc_purified"] = self._acc(defended, self.x)
                out["fd_acc_purified"] = self._acc(defended, self.x_adv)
            out["val_mse_purified"] = float(F.mse_loss(purified, self.x))
            out["val_mse_perturbed"] = float(F.mse_loss(self.x_adv, self.x))
        finally:
            generator.train(was)
        out["val_n"] = len(self.x)
        out["val_seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def grid(self, generator: nn.Module, path: str | Path, title: str = "") -> Path | None:
        """Write the perturbed / purified / clean grid of the first ``grid_n`` images."""
        if not self.grid_n:
            return None
        was = generator.training
        generator.eval()
        try:
            x_adv = self.x_adv[: self.grid_n]
            with torch.no_grad():
                purified = generator(x_adv)
        finally:
            generator.train(was)
        return save_image_rows([x_adv, purified, self.x[: self.grid_n]], path,
                               labels=["perturbed", "purified", "clean"], title=title)


def held_out(test, n: int, *, seed: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded sample of ``n`` images of ``test`` (an ImageDataset, the test split) as float
    (n, C, H, W) in [0, 1], with their labels."""
    sample = rl_data.place(rl_data.take(test, min(n, len(test)), seed=seed), device)  # CUDA: GPU
    x, y = next(rl_data.batches(sample, len(sample), shuffle=False, device=device))
    return x, y


def first_images(ds, n: int, device: torch.device) -> torch.Tensor:
    """The first ``n`` images of ``ds`` as float (n, C, H, W) in [0, 1] (labels not read)."""
    return ds.images[:n].to(device).float().div(255)
