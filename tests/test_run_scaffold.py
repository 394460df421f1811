"""The run scaffold shared by the trainers, on a toy trainer: the epoch loop and its files, resume,
the per-epoch seeds, divergence, and a stop that survives --resume."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from robustlab.errors import TrainingDiverged
from robustlab.training.run import Trainer, run_training


@dataclass(frozen=True)
class ToyConfig:
    epochs: int = 3
    seed: int = 0


class Toy(Trainer):
    """A linear layer nudged by one draw of the epoch generator per epoch."""

    kind = "toy"

    def __init__(self, cfg, *, poison_at=None, crash_at=None, stop_at=None):
        self.cfg, self.poison_at, self.crash_at, self.stop_at = cfg, poison_at, crash_at, stop_at
        self.trained: list[int] = []

    def build(self, out_dir):
        torch.manual_seed(self.cfg.seed)  # initial weights: the trainer's own stream
        self.model = torch.nn.Linear(2, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def state(self):
        return {"model": self.model, "optimizer": self.opt}

    def watched(self):
        return {"model": self.model}

    def train_epoch(self, epoch, gen):
        if epoch == self.crash_at:
            raise KeyboardInterrupt
        self.trained.append(epoch)
        with torch.no_grad():
            self.model.weight += torch.randn(1, 2, generator=gen)  # (1, 2): the epoch's draw
            if epoch == self.poison_at:
                self.model.bias.fill_(float("nan"))
        return {"draw": float(torch.rand((), generator=gen))}

    def after_epoch(self, epoch, metrics):
        if epoch == self.stop_at:
            self.meta["stopped"] = "asked to"
            return True
        return False

    def save(self, out_dir, metrics, epoch):
        (out_dir.path / "toy.txt").write_text(str(epoch + 1))


def lines(path):
    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]


def test_every_epoch_is_trained_and_saved(tmp_path):
    toy = Toy(ToyConfig())
    final = run_training(toy, tmp_path / "r")
    assert toy.trained == [0, 1, 2]
    got = lines(tmp_path / "r")
    assert [m["epoch"] for m in got] == [1, 2, 3] and final == got[-1]
    assert all(m["seconds"] >= 0 for m in got)
    assert json.loads((tmp_path / "r/last.json").read_text())["epoch"] == 3
    assert (tmp_path / "r/toy.txt").read_text() == "3"


def test_resume_continues_from_the_saved_epoch_with_the_same_draws(tmp_path):
    full = Toy(ToyConfig(epochs=4))
    run_training(full, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run_training(Toy(ToyConfig(epochs=4), crash_at=2), tmp_path / "cut")
    again = Toy(ToyConfig(epochs=4))
    run_training(again, tmp_path / "cut", resume=True)
    assert again.trained == [2, 3]
    draws = [[(m["epoch"], m["draw"]) for m in lines(tmp_path / r)] for r in ("full", "cut")]
    assert draws[0] == draws[1] and len(draws[0]) == 4
    assert torch.equal(again.model.weight, full.model.weight)


def test_a_non_finite_weight_stops_the_run_and_keeps_the_previous_epoch(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"^bias became non-finite in epoch 2; .*"
                                               "the checkpoint of epoch 1 was kept"):
        run_training(Toy(ToyConfig(), poison_at=1), tmp_path / "r")
    assert [m["epoch"] for m in lines(tmp_path / "r")] == [1]
    assert json.loads((tmp_path / "r/last.json").read_text())["epoch"] == 1
    assert (tmp_path / "r/toy.txt").read_text() == "1"


def test_a_stopped_run_stays_stopped_on_resume(tmp_path):
    run_training(Toy(ToyConfig(), stop_at=0), tmp_path / "r")
    again = Toy(ToyConfig())
    final = run_training(again, tmp_path / "r", resume=True)
    assert again.trained == [] and final["epoch"] == 1
    assert json.loads((tmp_path / "r/last.json").read_text())["extra"] == {"stopped": "asked to"}
