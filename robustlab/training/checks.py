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


def check_names(cfg: Any, method_registry: Any = None) -> None:
    """Every name a run config holds is registered (dataset, model, augmentation and, with
    ``method_registry``, method): checked before any data is loaded."""
    from ..data import DATASETS
    from ..data.presets import AUGMENTATIONS
    from ..models import MODELS

    DATASETS.get(cfg.dataset)
    MODELS.get(cfg.model)
    if cfg.augment is not None:
        AUGMENTATIONS.get(cfg.augment)
    if method_registry is not None:
        method_registry.get(cfg.method)
