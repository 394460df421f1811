"""Mode discipline for attacks (STYLE.md rule 7), in one place.

During an attack the model runs in eval mode (batch-norm uses its running statistics, dropout is
off) and its parameters do not require grad, so the backward pass computes the input gradient only.
Afterwards both the per-submodule train/eval flags and each parameter's ``requires_grad`` flag are
put back exactly as found, even when the attack raises.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from torch import nn


@contextmanager
def frozen_eval(model: Any) -> Iterator[Any]:
    """Run the block with ``model`` in eval mode and its parameters frozen; restore both after.

    Args:
        model: an ``nn.Module`` (anything else, e.g. a plain function, is passed through untouched).
    Yields:
        the same model.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, req in flags:
            p.requires_grad_(req)
