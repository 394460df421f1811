"""Datasets by name, your own data, seeded subsets and splits, batched augmentations, and a fast
batch iterator.

    ds = robustlab.data.load("fashion-mnist", "train")        # ImageDataset, uint8 in memory
    mine = robustlab.data.load("folder", "test", root="signs/")  # one sub-folder per class
    train, val = robustlab.data.split(ds, 0.1, seed=0)
    for x, y in robustlab.data.batches(train, 128, shuffle=True, generator=g,
                                       augment=train.default_augment):
        ...                                                    # x float32 (B, C, 32, 32) in [0, 1]
    robustlab.data.as_dataset(torch_dataset)                   # a Dataset, DataLoader or (x, y)
    train = robustlab.data.place(train, "cuda")                # uint8 on the GPU (pinned if too big)
"""
from __future__ import annotations

from . import cifar10, folder, gtsrb, idx, npz, synthetic  # noqa: F401  (register the datasets)
from .adapt import ACCEPTED, as_dataset, as_tensors
from .batching import batches
from .dataset import ImageDataset, split, take
from .loading import dataset_info, load
from .options import DataOptions
from .placement import place
from .presets import AUGMENTATIONS, Augmentation, augment
from .specs import DATASETS, DatasetSpec

__all__ = ["DATASETS", "AUGMENTATIONS", "ImageDataset", "DatasetSpec", "Augmentation",
           "DataOptions", "ACCEPTED", "load", "dataset_info", "as_dataset", "as_tensors", "take",
           "split", "augment", "batches", "place"]
