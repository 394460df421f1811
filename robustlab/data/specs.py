"""What robustlab knows about each dataset (the ``DATASETS`` registry) and what a reader returns."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

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
    # data that brings its own classes and statistics (``DatasetSpec.from_data``) sets these
    num_classes: Optional[int] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None


# read(location, split, size, **options) -> Raw; raises DataMissing (not here) or DataError (here
# but broken). ``options`` are the load options the spec lists (split_sizes, cache_dir, ...).
Reader = Callable[..., Raw]
# describe(location, size, **options) -> {num_classes, channels, class_names, mean, std}
Describer = Callable[..., dict[str, Any]]
# download(dest, split): fetch the dataset into dest in the layout ``read`` understands
Downloader = Callable[[Path, str], None]


@dataclass(frozen=True)
class DatasetSpec:
    """Metadata and file access for one named dataset.

    ``mean``/``std`` are the per-channel statistics for the model's Normalize layer (for the native
    channel count). ``pad`` is the zero padding per side the loader adds (28 -> 32 for the digit sets).
    A ``from_data`` set (folder, npz) takes its classes, channels and statistics from its files:
    its reader fills them into :class:`Raw` and ``describe`` reports them (the spec's own
    num_classes, channels, class_names, mean and std are unused placeholders). ``splits`` are the
    splits ``load`` accepts; ``options`` the load options the reader takes besides size.
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
    from_data: bool = False  # classes, channels and statistics come from the files
    describe: Optional[Describer] = None  # from_data sets: what the files hold
    splits: tuple[str, ...] = ("train", "test")
    options: tuple[str, ...] = ()  # load options the reader accepts (split_sizes, cache_dir, ...)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register(spec: DatasetSpec, help: str) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under its name."""
    DATASETS.register(spec.name, help=help)(spec)
    return spec
