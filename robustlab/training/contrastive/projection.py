"""Contrastive pre-training blocks: the NT-Xent loss, its PGD objective, the projection model.

SimCLR (Chen et al. 2020) learns by making two augmented views of an image agree in a projection
space; ACL (Jiang et al. 2020) makes the views adversarial by running PGD on that same NT-Xent loss.
The attack is the one PGD engine (:func:`robustlab.attacks.pgd`) with the ``"nt-xent"`` objective
registered here::

    x_adv = pgd(net, torch.cat([v1, v2]), None, eps=8/255, step_size=2/255, steps=5,
                objective="nt-xent")                                   # A2A: both views
    x1_adv = pgd(net, v1, None, ..., objective="nt-xent", objective_kwargs={"x_pair": v2})  # A2S

Labels are never used: the objective is label-free and the pre-training loop never reads them.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...attacks import register_objective
from ...attacks.geometry import work_dtype
from ...errors import ConfigError, InputError

TEMPERATURE = 0.5  # ACL / SimCLR-CIFAR default


def nt_xent_per_anchor(z1: Tensor, z2: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy) of every anchor (Chen et al. 2020).

    With z = normalise(cat(z1, z2)) (2N rows) and s_ik = z_i . z_k / temperature, anchor i's
    positive is its other view p(i) = i +- N and its negatives are the other 2N - 2 rows:
    ``l_i = -s_ip(i) + log sum_{k != i} exp(s_ik)``.

    Args:
        z1, z2: (N, D) projections of the first and second views (row i of both: the same image).
        temperature: tau > 0.
    Returns:
        (2N,) per-anchor losses, in float32 (or wider): rows 0..N-1 anchor on view 1, N..2N-1 on
        view 2.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise InputError(f"NT-Xent needs two (N, D) projections of the same shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    if n < 2:
        raise InputError(f"NT-Xent needs at least 2 images per batch (the other images of the "
                         f"batch are the negatives), got a batch of {n}; use a batch size >= 2 "
                         "(SimCLR/ACL use 256-512)")
    if not temperature > 0:
        raise ConfigError(f"the NT-Xent temperature must be > 0, got {temperature!r}")
    z = torch.cat([z1, z2]).to(work_dtype(z1.dtype))
    z = F.normalize(z, dim=1)
    sim = z @ z.t() / temperature  # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2N,)
    return torch.logsumexp(sim, dim=1) - sim[torch.arange(2 * n, device=z.device), pos]


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """The SimCLR loss: the mean of :func:`nt_xent_per_anchor` over the 2N anchors (0-d tensor)."""
    return nt_xent_per_anchor(z1, z2, temperature).mean()


@register_objective("nt-xent", needs_labels=False,
                    help="NT-Xent between two augmented views (ACL contrastive attack, Jiang et "
                         "al. 2020); label-free")
def make_nt_xent(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor | None = None, *,
                 x_pair: Tensor | None = None, temperature: float = TEMPERATURE) -> Callable:
    """The contrastive attack's objective for the PGD engine (ACL, Jiang et al. 2020).

    Args:
        model: maps (B, C, H, W) images in [0, 1] to (B, D) projections (encoder + projection head).
        x: without ``x_pair``: the two views stacked, (2N, C, H, W) = cat(view1, view2), both
            attacked (A2A). With ``x_pair``: the N images of the attacked view (A2S).
        y: ignored (label-free).
        x_pair: (N, C, H, W) clean second view, kept fixed; its projections are computed once here.
        temperature: the NT-Xent temperature.
    Returns:
        ``loss(x_adv) -> per-sample losses``: (2N,) per anchor for A2A; for A2S (N,), the losses of
        the two anchors of each pair added, so their sum is the batch's total NT-Xent.
    """
    if x_pair is None:
        if x.shape[0] % 2:
            raise InputError(f"the nt-xent objective without x_pair needs the two views stacked "
                             f"(an even batch of 2N images), got {x.shape[0]}")

        def both(x_adv: Tensor) -> Tensor:
            z = model(x_adv)
            half = z.shape[0] // 2
            return nt_xent_per_anchor(z[:half], z[half:], temperature)
        return both
    if x_pair.shape != x.shape:
        raise InputError(f"x_pair must have the shape of x, got {tuple(x_pair.shape)} and "
                         f"{tuple(x.shape)}")
    with torch.no_grad():
        z_pair = model(x_pair.to(x.dtype)).detach()  # (N, D), fixed during the attack

    def one(x_adv: Tensor) -> Tensor:
        per = nt_xent_per_anchor(model(x_adv), z_pair.to(x_adv.device), temperature)
        half = per.shape[0] // 2
        return per[:half] + per[half:]
    return one


def final_linear(model: nn.Module) -> nn.Linear:
    """The classifier's last ``nn.Linear`` (its head), whose input is the representation."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no final nn.Linear to put a projection "
                          "head in front of")
    return linears[-1]


class ProjectionModel(nn.Module):
    """A classifier used as an encoder: its final Linear's input goes through a projection head.

    The classifier itself is untouched (its head simply receives no gradient), so ``self.encoder``
    saves as a plain classifier checkpoint of the same architecture that fine-tuning loads.
    The head is SimCLR's MLP: Linear(d, hidden), ReLU, Linear(hidden, proj_dim).

    Args:
        encoder: any registered classifier ([0, 1] images -> logits).
        proj_dim: output size of the projection (128 in SimCLR/ACL).
        hidden: hidden size of the head (default: d, the representation size).
    """

    def __init__(self, encoder: nn.Module, proj_dim: int = 128, hidden: int | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self._head = [final_linear(encoder)]  # a plain list: not registered twice as a submodule
        d = self._head[0].in_features
        hidden = hidden or d
        self.projector = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, proj_dim))

    def representation(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, d) inputs of the classifier's final Linear."""
        found: list[Tensor] = []
        handle = self._head[0].register_forward_pre_hook(
            lambda _m, args: found.append(args[0]))
        try:
            self.encoder(x)
        finally:
            handle.remove()
        return found[-1]

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, H, W) in [0, 1] -> (B, proj_dim) projections
        return self.projector(self.representation(x))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Everything except the classifier's head (which the NT-Xent loss never reaches)."""
        head = {id(p) for p in self._head[0].parameters()}
        return [p for p in self.parameters() if id(p) not in head]


def contrastive_preset(dataset) -> str:
    """The dataset-aware SimCLR augmentation preset (REFERENCE.md, ACL paragraph).

    "simclr" (resized crop, flip, colour jitter, greyscale) for data that may be flipped (CIFAR,
    Fashion-MNIST); "simclr-signs" (colour only: no flip, no crop) for data that must not be
    flipped (traffic signs, digits).
    """
    return "simclr" if dataset.flip_ok else "simclr-signs"
