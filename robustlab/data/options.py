"""How a dataset is loaded beyond its name and location: :class:`DataOptions`, and the seeded
train/validation/test partition of data that comes without its own splits (``folder``, ``npz``).

A run's config records its options as ``data`` in ``config.json``; the CLI's ``--channels``,
``--size``, ``--split-sizes``, ``--split-seed`` and ``--cache-dir`` fill them in.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_SPLIT_SIZES = (0.8, 0.1, 0.1)  # train, val, test of a folder or .npz without splits
Size = Union[int, float]


@dataclass(frozen=True)
class DataOptions:
    """Per-dataset options of a run (typed, checked on construction, saved in ``config.json``).

    Attributes:
        channels: 1 or 3 to convert every image (grey repeated to RGB, RGB to BT.601 luminance);
            None keeps the data's own. Works for every dataset, so a 3-channel architecture runs
            on Fashion-MNIST.
        size: image side after resizing (None: 32; the purifier trainer uses its image_size).
        split_sizes: (train, val, test) of a ``folder``/``npz`` without split sub-folders or
            files: three fractions summing to at most 1, or three counts (50000, 10000, 13000).
            None: (0.8, 0.1, 0.1). Images left over are unused.
        split_seed: seed of that partition. It is not the run's seed, so a classifier and its
            later evaluation agree on which images are the test split.
        cache_dir: where ``folder`` (and ``gtsrb``) keep their decoded images; None: inside the
            data folder (``.robustlab-cache/``), else the download cache.
    """

    channels: Optional[int] = None
    size: Optional[int] = None
    split_sizes: Optional[tuple[Size, ...]] = None
    split_seed: int = 0
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.channels is not None and (isinstance(self.channels, bool)
                                          or self.channels not in (1, 3)):
            raise ConfigError(f"channels must be 1 or 3 (or unset for the data's own), got "
                              f"{self.channels!r}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int)
                                      or self.size < 2):
            raise ConfigError(f"size must be an integer >= 2 (the image side), got {self.size!r}")
        if self.split_sizes is not None:
            object.__setattr__(self, "split_sizes", check_split_sizes(self.split_sizes))
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int) \
                or self.split_seed < 0:
            raise ConfigError(f"split_seed must be an integer >= 0, got {self.split_seed!r}")
        if self.cache_dir is not None and (not isinstance(self.cache_dir, str) or not self.cache_dir):
            raise ConfigError(f"cache_dir must be a folder path, got {self.cache_dir!r}")

    def load_args(self, default_size: int = 32) -> dict[str, Any]:
        """The keyword arguments of :func:`robustlab.data.load` these options stand for."""
        return {"size": self.size or default_size, "channels": self.channels,
                "split_sizes": self.split_sizes, "split_seed": self.split_seed,
                "cache_dir": self.cache_dir}


def check_split_sizes(sizes: Any) -> tuple[Size, ...]:
    """Three counts (ints >= 0) or three fractions (floats in [0, 1] summing to at most 1) for
    (train, val, test), the train part not empty; returns them as a tuple."""
    what = "split sizes (train, val, test)"
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) != 3:
        raise ConfigError(f"{what} need three values, e.g. 0.8,0.1,0.1 or 50000,10000,13000; "
                          f"got {sizes!r}")
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in sizes):
        raise ConfigError(f"{what} must be numbers, got {list(sizes)!r}")
    if all(isinstance(v, numbers.Integral) for v in sizes):
        out: tuple[Size, ...] = tuple(int(v) for v in sizes)
        if min(out) < 0 or out[0] == 0:
            raise ConfigError(f"{what} as counts must be >= 0 with at least one training image, "
                              f"got {list(out)}")
        return out
    out = tuple(float(v) for v in sizes)
    if not all(math.isfinite(v) and 0 <= v <= 1 for v in out) or out[0] == 0 \
            or sum(out) > 1 + 1e-9:
        raise ConfigError(f"{what} as fractions must lie in [0, 1], sum to at most 1 and give "
                          f"training a share, got {list(out)}; write counts as whole numbers")
    return out


def partition(n: int, sizes: Optional[tuple[Size, ...]], seed: int,
              where: str = "the data") -> dict[str, torch.Tensor]:
    """Seeded disjoint index sets {"train", "val", "test"} over ``n`` samples, each in ascending
    order. Fractions are turned into counts at cumulative boundaries (round(cumsum * n)), so
    fractions summing to 1 use every sample. Raises ConfigError when counts ask for more than n."""
    sizes = check_split_sizes(sizes if sizes is not None else DEFAULT_SPLIT_SIZES)
    if isinstance(sizes[0], int):
        counts = list(sizes)
        if sum(counts) > n:
            raise ConfigError(f"split sizes {counts} ask for {sum(counts)} images but {where} "
                              f"has {n}")
    else:
        bounds = [0] + [round(sum(sizes[:i + 1]) * n) for i in range(3)]
        counts = [min(bounds[i + 1], n) - min(bounds[i], n) for i in range(3)]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    out, start = {}, 0
    for name, k in zip(SPLIT_NAMES, counts):
        out[name] = perm[start:start + k].sort().values
        start += k
    if not len(out["train"]):
        raise ConfigError(f"split sizes {list(sizes)} leave no training image of the {n} in "
                          f"{where}")
    return out
