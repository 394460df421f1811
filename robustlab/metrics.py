"""Accuracy over a dataset: clean predictions, batched, in eval mode (used by the trainers, their
guards, the purifier monitor and the evaluation harness alike)."""
from __future__ import annotations

import contextlib

import torch

from . import data as rl_data
from ._checks import check_images


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


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
