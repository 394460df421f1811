"""Accuracy over a dataset, clean and under attack, batched and in eval mode: the one place the
trainers, their guards, the purifier monitor and the evaluation harness count right answers.

Two conventions, kept apart: ``accuracy`` / ``predict`` score clean predictions of a dataset;
``robust_accuracy`` counts a sample when it is classified correctly both clean and attacked
(AutoAttack's convention), so it never exceeds clean accuracy. ``correct`` and
``attack_then_score`` are the per-batch steps both are made of.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor, nn

from . import data as rl_data
from ._checks import check_images
from .attacks.mode import frozen_eval

# attack(model, x, y) -> x_adv: (B, C, H, W) in [0, 1], within the attack's budget of x
Attack = Callable[[nn.Module, Tensor, Tensor], Tensor]


@torch.no_grad()
def predict(model: torch.nn.Module, dataset, *, batch_size: int = 256,
            device: torch.device | str | None = None, amp_dtype: torch.dtype | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (predicted labels, true labels) for every sample of ``dataset``, on the CPU.

    The model runs in eval mode; its previous mode is put back afterwards.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    preds, labels = [], []
    try:
        for x, y in rl_data.batches(dataset, batch_size, shuffle=False, device=device):
            check_images(x, getattr(model, "in_channels", None))
            ctx = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                   else contextlib.nullcontext())
            with ctx:
                logits = model(x)
            preds.append(logits.argmax(1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not preds:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(preds), torch.cat(labels)


def accuracy(model: torch.nn.Module, dataset, **kw) -> float:
    """Clean top-1 accuracy in [0, 1]."""
    pred, y = predict(model, dataset, **kw)
    return float((pred == y).float().mean()) if len(y) else float("nan")


def correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """(B,) bool: ``model``'s top-1 prediction on the (B, C, H, W) batch ``x`` equals ``y``.

    No gradients; the model runs in eval mode and every submodule's mode and every parameter's
    requires_grad flag are put back afterwards (a trainer's model may be in train mode).
    """
    with frozen_eval(model), torch.no_grad():
        return model(x).argmax(1) == y


def attack_then_score(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, *,
                      scored: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """Craft ``x_adv = attack(model, x, y)`` and score it.

    Args:
        attack: ``attack(model, x, y) -> x_adv``. model: the module the attacker differentiates
            through. scored: the module whose predictions count (default: ``model``), e.g. the
            defended model when the examples were crafted on its bare classifier.
    Returns:
        (x_adv, (B,) bool: ``scored`` is right on x_adv).
    """
    x_adv = attack(model, x, y)
    return x_adv, correct(model if scored is None else scored, x_adv, y)


def robust_accuracy(model: nn.Module, dataset, attack: Attack, *, batch_size: int = 256,
                    device: torch.device | str | None = None) -> float:
    """Robust accuracy in [0, 1] of ``model`` on ``dataset`` under ``attack``: the fraction of
    samples classified correctly both clean and attacked (0.0 for an empty dataset).

    Args:
        model: a classifier ([0, 1] images -> logits); attacked and scored in eval mode, its
            modes restored afterwards. dataset: an ImageDataset, visited in order.
        attack: ``attack(model, x, y) -> x_adv``, called once per batch in order (so a generator
            it draws from advances batch after batch).
        batch_size: samples per batch. device: where the batches go (default: the model's).
    """
    device = torch.device(device) if device is not None else _model_device(model)
    right, n = 0, 0
    for x, y in rl_data.batches(dataset, batch_size, shuffle=False, device=device):
        _, adv_ok = attack_then_score(attack, model, x, y)
        right += int((correct(model, x, y) & adv_ok).sum())
        n += y.shape[0]
    return right / max(n, 1)


def accuracy_on(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on the tensors ``x`` (N, C, H, W) and ``y`` (N,),
    already on the model's device, scored ``batch_size`` at a time (0.0 when N is 0)."""
    right = sum(int(correct(model, xb, yb).sum())
                for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return right / max(len(x), 1)


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
