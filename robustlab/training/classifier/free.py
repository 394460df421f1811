"""Free adversarial training (Shafahi et al. 2019, "Adversarial training for free!").

Each mini-batch is replayed m times (``replays``, 8 in the paper's CIFAR setting). One backward
pass per replay gives both the weights' gradient (an optimiser step per replay) and the input
gradient, which moves the perturbation::

    delta <- clip_eps(delta + step * sign(grad_delta)),  then x + delta clamped into [0, 1]

(step = eps, the paper's, unless ``step_size`` says otherwise). The perturbation is carried from
replay to replay and from mini-batch to mini-batch, as in the paper: it has the batch's shape,
a smaller last batch takes its leading rows, and it is clamped into the new batch's [0, 1] box
before the first replay. It starts at zero, and again at the start of every pass over the data,
so a run resumed after any pass ends exactly like one that never stopped. Under torchrun each
process carries the perturbation of its own shard.

"Epochs divided by m": with ``epochs`` E the run makes ceil(E / m) passes over the data, so it
takes as many optimiser steps as E epochs of standard training; the learning-rate schedule spans
those steps, and every metrics line records ``replays`` and the ``optimizer_steps`` so far
(``train_loss``/``train_acc`` are means over every replay).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ...attacks import ascent_step, project
from ...attacks.geometry import work_dtype
from .adversarial import check_step
from .methods import METHODS, Method, StepOutput, check_count, check_method_eps, refuse_fp16


@METHODS.register("free", help="Free-AT: each mini-batch replayed m times (--replays, default 8), "
                  "one backward per replay stepping both the weights and the perturbation, which "
                  "is carried across replays and batches; ceil(epochs / m) passes over the data "
                  "(Shafahi et al. 2019)")
class FreeTraining(Method):
    name = "free"
    step_each_replay = True

    @dataclass(frozen=True)
    class Args:
        eps: float = 8 / 255
        replays: int = 8                   # m: passes over each mini-batch
        step_size: Optional[float] = None  # None: eps (the paper's step)

    @classmethod
    def check_args(cls, a: Any) -> None:
        check_count(cls.name, "replays", a.replays, "the passes over each mini-batch")
        check_step(cls.name, a.step_size)

    @classmethod
    def check_config(cls, cfg: Any, a: Any) -> None:
        refuse_fp16(cls.name, cfg, "the perturbation step")

    def __init__(self, args: dict[str, Any], ctx: Any) -> None:
        super().__init__(args, ctx)
        a = self.args
        check_method_eps(self.name, a.eps)
        self.check_args(a)
        self.replays = a.replays
        self.step = a.eps if a.step_size is None else a.step_size
        self.delta: Optional[torch.Tensor] = None  # (B, C, H, W), carried across batches
        self._leaf: Optional[torch.Tensor] = None

    def start_epoch(self, epoch, model, generator) -> None:
        self.delta = None  # each pass starts from zero: resume == uninterrupted, nothing to save

    def start_batch(self, x, y, generator) -> None:
        b, d = x.shape[0], self.delta
        if d is None or d.shape[1:] != x.shape[1:]:
            d = torch.zeros_like(x, dtype=work_dtype(x.dtype))
        elif d.shape[0] > b:
            d = d[:b]  # a smaller (last) batch: the leading rows
        elif d.shape[0] < b:  # rows no earlier batch had start at zero
            d = torch.cat([d, torch.zeros_like(x[d.shape[0]:], dtype=d.dtype)])
        self.delta = (x + d).clamp(0.0, 1.0) - x  # into this batch's [0, 1] box

    def loss(self, model, x, y, generator):
        self._leaf = self.delta.detach().requires_grad_()
        logits = model(x + self._leaf)  # (B, K), train mode, at x + delta in [0, 1]
        return StepOutput(F.cross_entropy(logits, y), logits)

    def after_backward(self, model, x, y, out) -> None:
        grad = self._leaf.grad  # the input gradient of the backward the weights stepped on
        if grad is None:
            return
        x_adv = project(ascent_step(x + self._leaf.detach(), grad, self.step, "linf"), x,
                        self.args.eps, "linf")
        self.delta = (x_adv - x).detach()
        self._leaf = None

