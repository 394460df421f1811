"""Feature extractors: a classifier's normalisation plus its first n convolution blocks.

These are the features P_n of the SSR report (seed 000): the feature-distortion attack (Alg. 1)
maximises ||P_n(x') - P_n(x)||_2 and the purifier's perceptual loss compares P_n(G(x')) with P_n(x).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class FeatureExtractor(nn.Module):
    """Normalize + ``blocks[:n]`` of a classifier, sharing its modules (and so its weights).

    Putting the extractor in eval/train mode changes the shared modules of the source model too.
    """

    def __init__(self, normalize: nn.Module, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.normalize = normalize
        self.blocks = nn.ModuleList(blocks)
        self.n_blocks = len(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) in [0, 1] -> (B, C_n, H_n, W_n) features after block n
        h = self.normalize(x)
        for block in self.blocks:
            h = block(h)
        return h


def feature_extractor(model: nn.Module, n_blocks: int) -> FeatureExtractor:
    """The first ``n_blocks`` convolution blocks of a robustlab classifier, as a module.

    Args:
        model: a classifier from :func:`robustlab.models.create` (it has ``normalize`` and
            ``blocks``); for VGG, block k ends after its last ReLU, before its max-pool.
        n_blocks: how many blocks, 1 <= n_blocks <= len(model.blocks).

    Returns:
        A :class:`FeatureExtractor` whose parameters are the model's own (not copies).
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    blocks = getattr(model, "blocks", None)
    normalize = getattr(model, "normalize", None)
    if not isinstance(blocks, nn.ModuleList) or not isinstance(normalize, nn.Module):
        raise ConfigError(f"{type(model).__name__} has no 'normalize' layer and 'blocks' list, "
                          "so its first blocks cannot be taken as features; use a classifier "
                          "built with robustlab.models.create() (`robustlab list models`) as the "
                          "extractor (--extractor)")
    count = len(blocks)
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or not 1 <= n_blocks <= count:
        raise ConfigError(f"n_blocks must be an integer from 1 to {count} for "
                          f"{type(model).__name__}, got {n_blocks!r}")
    return FeatureExtractor(normalize, list(blocks)[:n_blocks])
