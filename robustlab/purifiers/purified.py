"""A purifier in front of a classifier, as one ordinary module (so white-box attacks need no
special code: gradients flow through both)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


class Purified(nn.Module):
    """``classifier(purifier(x))``: the defended model of the SSR report and NRP.

    Args:
        purifier: [0, 1] images -> [0, 1] images of the same shape.
        classifier: [0, 1] images -> logits.

    Raises:
        InputError at construction when both expose ``in_channels`` and they differ, and at
        forward when the purifier changes the shape of its input.
    """

    def __init__(self, purifier: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        pc = getattr(purifier, "in_channels", None)
        cc = getattr(classifier, "in_channels", None)
        if pc is not None and cc is not None and pc != cc:
            raise InputError(f"the purifier takes {pc}-channel images but the classifier takes "
                             f"{cc}; build both for the same dataset")
        self.purifier = purifier
        self.classifier = classifier

    @property
    def in_channels(self) -> int | None:
        """Image channels (from the purifier, else the classifier; None if neither says)."""
        pc = getattr(self.purifier, "in_channels", None)
        return pc if pc is not None else getattr(self.classifier, "in_channels", None)

    @property
    def num_classes(self) -> int | None:
        """The classifier's number of classes (None if it does not expose it)."""
        return getattr(self.classifier, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the classifier on the purified batch; x is (B, C, H, W) in [0, 1]."""
        x_pure = self.purifier(x)
        if x_pure.shape != x.shape:
            raise InputError(f"the purifier turned a {tuple(x.shape)} batch into "
                             f"{tuple(x_pure.shape)}; a purifier must keep the input's shape")
        return self.classifier(x_pure)
