"""The projection model of contrastive pre-training, and its augmentation preset.

SimCLR (Chen et al. 2020) learns by making two augmented views of an image agree in a projection
space; ACL (Jiang et al. 2020) makes the views adversarial by running PGD on that same NT-Xent loss.
The loss and the attack's ``"nt-xent"`` objective live with the other objectives in
:mod:`robustlab.attacks.objectives`; the attack is the one PGD engine::

    x_adv = pgd(net, torch.cat([v1, v2]), None, eps=8/255, step_size=2/255, steps=5,
                objective="nt-xent")                                   # A2A: both views
    x1_adv = pgd(net, v1, None, ..., objective="nt-xent", objective_kwargs={"x_pair": v2})  # A2S

Labels are never used: the objective is label-free and the pre-training loop never reads them.
"""
from __future__ import annotations

from torch import Tensor, nn

from ...errors import ConfigError


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
