"""Datasets by name, seeded subsets and splits, batched augmentations, and a fast batch iterator.

    ds = robustlab.data.load("fashion-mnist", "train")        # ImageDataset, uint8 in memory
    train, val = robustlab.data.split(ds, 0.1, seed=0)
    for x, y in robustlab.data.batches(train, 128, shuffle=True, generator=g,
                                       augment=train.default_augment):
        ...                                                    # x float32 (B, C, 32, 32) in [0, 1]
"""
from __future__ import annotations

from . import cifar10, gtsrb, idx, synthetic  # noqa: F401  (register the datasets)
from .batching import batches
from .dataset import ImageDataset, split, take
from .loading import dataset_info, load
from .presets import AUGMENTATIONS, Augmentation, augment
from .specs import DATASETS, DatasetSpec

__all__ = ["DATASETS", "AUGMENTATIONS", "ImageDataset", "DatasetSpec", "Augmentation", "load",
           "dataset_info", "take", "split", "augment", "batches"]
