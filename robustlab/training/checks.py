"""Checks every trainer's config passes before any data is loaded or file written."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError


# model arguments that a run sets itself: from the dataset (classes, channels) or its own field
_RUN_SETS = {"num_classes": "the dataset's number of classes", "in_channels":
             "the dataset's channels", "width": "the width setting (--width)"}


def check_model_kwargs(kwargs: Any) -> None:
    """model_kwargs may add architecture arguments, never ones the run sets itself."""
    if not isinstance(kwargs, dict):
        raise ConfigError(f"model_kwargs must be a mapping, got {kwargs!r}")
    for key, who in _RUN_SETS.items():
        if key in kwargs:
            raise ConfigError(f"model_kwargs.{key} cannot be set: it comes from {who}")


def check_val(val: Any) -> None:
    """The validation setting: 0 (none), a count >= 1, a fraction in (0, 1), or "split" (the
    dataset's own validation split: a folder's val/ sub-folder or the val part of its split)."""
    from .._checks import is_size

    if val != 0 and val != "split" and not is_size(val):
        raise ConfigError(f"val must be 0, a count >= 1, a fraction in (0, 1) or 'split' (the "
                          f"dataset's own validation split), got {val!r}")


def data_options(value: Any):
    """The run's DataOptions, also from a mapping (``TrainConfig(data={...})`` from Python)."""
    from ..config import from_dict
    from ..data.options import DataOptions

    if isinstance(value, DataOptions):
        return value
    if isinstance(value, dict):
        return from_dict(DataOptions, value, where="data")
    raise ConfigError(f"data must be a mapping of data options (channels, size, split_sizes, "
                      f"split_seed, cache_dir), got {value!r}")


def check_names(cfg: Any, method_registry: Any = None, *, dataset: bool = True) -> None:
    """Every name a run config holds is registered (dataset, model, augmentation and, with
    ``method_registry``, method): checked before any data is loaded. ``dataset=False`` when the
    run is handed its data (``data=``): the name then only labels it."""
    from ..data import DATASETS
    from ..data.presets import AUGMENTATIONS
    from ..models import MODELS

    if dataset:
        DATASETS.get(cfg.dataset)
    MODELS.get(cfg.model)
    if cfg.augment is not None:
        AUGMENTATIONS.get(cfg.augment)
    if method_registry is not None:
        method_registry.get(cfg.method)
