"""What robustlab knows about each dataset (the ``DATASETS`` registry) and what a reader returns."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import DataError
from ..registry import Registry


class DataMissing(DataError):
    """The dataset's files are not at this location (the resolver then tries the next one)."""


@dataclass(frozen=True)
class Raw:
    """What a reader returns before padding, resizing and channel conversion."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    class_names: Optional[tuple[str, ...]] = None  # read from the files when they carry them


# read(location, split, size) -> Raw; raises DataMissing (not here) or DataError (here but broken)
Reader = Callable[[Optional[Path], str, int], Raw]
# download(dest, split): fetch the dataset into dest in the layout ``read`` understands
Downloader = Callable[[Path, str], None]


@dataclass(frozen=True)
class DatasetSpec:
    """Metadata and file access for one named dataset.

    ``mean``/``std`` are the per-channel statistics for the model's Normalize layer (for the native
    channel count). ``pad`` is the zero padding per side the loader adds (28 -> 32 for the digit sets).
    """

    name: str
    num_classes: int
    channels: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip_ok: bool
    default_augment: str
    read: Reader
    expect: str = ""  # what a data root must contain, for error messages
    install: str = ""  # how to put it in a system location, for error messages
    download: Optional[Downloader] = None
    pad: int = 0
    sized_by_reader: bool = False  # the reader already returns size x size images (GTSRB)
    generated: bool = False  # no files at all (synthetic)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register(spec: DatasetSpec, help: str) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under its name."""
    DATASETS.register(spec.name, help=help)(spec)
    return spec
