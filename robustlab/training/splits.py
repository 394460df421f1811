"""The data a training run sees: validation held out of the train split first, then the subset.

Shared by the classifier trainer and contrastive pre-training, so that pre-training never sees the
images fine-tuning validates on (same split, same seed).
"""
from __future__ import annotations

from .. import data as rl_data


def prepare_data(cfg, data_root: str | None):
    """(train, val) for a config: validation is held out of the train split before ``subset``."""
    full = rl_data.load(cfg.dataset, "train", root=data_root)
    train, val = (rl_data.split(full, cfg.val, seed=cfg.seed) if cfg.val else (full, None))
    if cfg.subset is not None:
        train = rl_data.take(train, cfg.subset, seed=cfg.seed)
    return train, val
