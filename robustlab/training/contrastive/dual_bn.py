"""Dual batch norm (ACL's "dual stream", Jiang et al. 2020): separate BN for clean and adversarial
views.

Clean and adversarial images have different activation statistics; mixing them in one batch norm
hurts both. :func:`convert_dual_bn` gives every batch-norm layer a clean and an adversarial copy
(statistics and affine parameters), :func:`bn_branch` switches all of them at once, and
:func:`export_branch` writes one branch into a plain model of the same architecture, so that the
saved encoder is an ordinary classifier checkpoint (ACL fine-tunes from the adversarial branch).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...errors import ConfigError

BRANCHES = ("clean", "adv")


class DualBatchNorm(nn.Module):
    """Two copies of one batch-norm layer; ``branch`` says which one a forward pass uses."""

    def __init__(self, bn: _BatchNorm) -> None:
        super().__init__()
        self.clean = bn
        self.adv = copy.deepcopy(bn)
        self.branch = "clean"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.adv if self.branch == "adv" else self.clean)(x)


def convert_dual_bn(model: nn.Module) -> int:
    """Replace, in place, every batch-norm layer of ``model`` by a :class:`DualBatchNorm`.

    Both copies start from the layer's current state. Returns the number of layers converted;
    raises ConfigError when the model has none (dual BN would then change nothing).
    """
    count = _convert(model)
    if count == 0:
        raise ConfigError(f"dual-bn needs a model with batch-norm layers, and "
                          f"{type(model).__name__} has none; use a BN model (e.g. resnet18) or "
                          "the a2a method")
    return count


def _convert(module: nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm):
            setattr(module, name, DualBatchNorm(child))
            count += 1
        elif not isinstance(child, DualBatchNorm):
            count += _convert(child)
    return count


@contextmanager
def bn_branch(model: nn.Module, branch: str) -> Iterator[nn.Module]:
    """Run the block with every :class:`DualBatchNorm` of ``model`` on ``branch`` (clean or adv);
    the previous branches are put back afterwards."""
    if branch not in BRANCHES:
        raise ConfigError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
    duals = [m for m in model.modules() if isinstance(m, DualBatchNorm)]
    before = [m.branch for m in duals]
    try:
        for m in duals:
            m.branch = branch
        yield model
    finally:
        for m, b in zip(duals, before):
            m.branch = b


def branch_state_dict(model: nn.Module, branch: str) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every dual layer collapsed to ``branch`` (plain BN names).

    ``"layer1.0.bn1.adv.weight"`` becomes ``"layer1.0.bn1.weight"``; the other branch is dropped.
    """
    if branch not in BRANCHES:
        raise ConfigError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
    duals = [name for name, m in model.named_modules() if isinstance(m, DualBatchNorm)]
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        owner = next((d for d in duals if key.startswith(f"{d}.")), None)
        if owner is None:
            out[key] = value
            continue
        rest = key[len(owner) + 1:]
        which, _, leaf = rest.partition(".")
        if which == branch:
            out[f"{owner}.{leaf}"] = value
    return out


def export_branch(model: nn.Module, plain: nn.Module, branch: str = "adv") -> nn.Module:
    """Copy ``model`` (converted by :func:`convert_dual_bn`) into ``plain``, an unconverted model of
    the same architecture, taking every batch norm from ``branch``. Returns ``plain``."""
    plain.load_state_dict(branch_state_dict(model, branch), strict=True)
    return plain
