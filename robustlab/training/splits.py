"""The data a training run sees: validation held out of the train split first, then the subset.

Shared by the classifier trainer and contrastive pre-training, so that pre-training never sees the
images fine-tuning validates on (same split, same seed). ``val="split"`` validates on the
dataset's own validation split instead (a folder's ``val/`` sub-folder, or the val part of its
``split_sizes``). Data handed to a trainer (``train(cfg, out, data=...)``) replaces the train
split; it may be anything :func:`robustlab.data.as_dataset` takes.
"""
from __future__ import annotations

from typing import Any, Optional

from .. import data as rl_data
from ..errors import ConfigError


def load_split(cfg, split: str, data_root: Optional[str], size: Optional[int] = None):
    """``split`` of ``cfg.dataset`` loaded as ``cfg.data`` says (channels, size, split sizes,
    cache); ``size`` overrides the side (the purifier trainer's image_size)."""
    args = cfg.data.load_args()
    if size is not None:
        args["size"] = size
    return rl_data.load(cfg.dataset, split, root=data_root, **args)


def given_data(cfg, data: Any, size: Optional[int] = None):
    """Data handed to a trainer as an ImageDataset named ``cfg.dataset``, converted as
    ``cfg.data`` asks (channels, size)."""
    return rl_data.as_dataset(data, name=cfg.dataset, channels=cfg.data.channels,
                              size=size or cfg.data.size)


def prepare_data(cfg, data_root: str | None, data: Any = None):
    """(train, val) for a config: validation is held out of the train split before ``subset``
    (or, with ``val="split"``, is the dataset's own validation split)."""
    full = load_split(cfg, "train", data_root) if data is None else given_data(cfg, data)
    if cfg.val == "split":
        if data is not None:
            raise ConfigError("val 'split' validates on the dataset's own validation split, "
                              "which data handed to the trainer does not have; hold one out "
                              "with val=0.1 (or a count)")
        train, val = full, load_split(cfg, "val", data_root)
    elif cfg.val:
        train, val = rl_data.split(full, cfg.val, seed=cfg.seed)
    else:
        train, val = full, None
    if cfg.subset is not None:
        train = rl_data.take(train, cfg.subset, seed=cfg.seed)
    return train, val
