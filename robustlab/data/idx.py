"""Fashion-MNIST and MNIST from idx files, gzipped or not, flat or in torchvision's layout.

Accepted layouts under a root: the files directly in it (Debian's ``dataset-fashion-mnist`` package
puts Fashion-MNIST flat in /usr/share/datasets/fashion-mnist), or torchvision's ``FashionMNIST/raw/``
and ``MNIST/raw/``. Images are 28x28 grey; the loader pads them to 32x32 (LeCun et al. 1998;
Xiao et al. 2017).
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError
from .specs import DataMissing, DatasetSpec, Raw, register

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
DIGITS = tuple(str(i) for i in range(10))


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte idx file (gzipped or not) with ``ndim`` dimensions, checking its size."""
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); delete it and "
                        "fetch the dataset again") from None
    # header: two zero bytes, type code 0x08 (unsigned byte), number of dims, then big-endian dims
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != ndim:
        raise DataError(f"{path} is not an idx file of unsigned bytes with {ndim} dimension(s) "
                        f"(bad magic number {data[:4].hex()})")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DataError(f"{path} is truncated: the header is incomplete")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) != head + int(np.prod(dims)):
        raise DataError(f"{path} is truncated or corrupt: its header says {dims} "
                        f"({head + int(np.prod(dims))} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def _find(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _reader(tv_folder: str, local: str):
    def read(root: Optional[Path], split: str, size: int) -> Raw:
        root = Path(root)
        img_stem, lab_stem = FILES[split]
        for folder in (root, root / tv_folder / "raw", root / local):
            img, lab = _find(folder, img_stem), _find(folder, lab_stem)
            if img is not None and lab is not None:
                break
        else:
            raise DataMissing(f"no {img_stem}[.gz] and {lab_stem}[.gz] (flat or under "
                              f"{tv_folder}/raw/)")
        images = read_idx(img, 3)
        labels = read_idx(lab, 1)
        if images.shape[1:] != (28, 28):
            raise DataError(f"{img}: expected 28x28 images, got {images.shape[1:]}")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{lab} has {labels.shape[0]} labels but {img} has {images.shape[0]} "
                            "images")
        if labels.size and labels.max() > 9:
            raise DataError(f"{lab}: labels must lie in [0, 9], found {int(labels.max())}")
        return Raw(torch.from_numpy(images.copy()).unsqueeze(1),
                   torch.from_numpy(labels.astype(np.int64)))
    return read


def _downloader(cls_name: str):
    def download(dest: Path, split: str) -> None:
        import torchvision

        getattr(torchvision.datasets, cls_name)(root=str(dest), train=split == "train",
                                                download=True)
    return download


_EXPECT = "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-... (flat or in {}/raw/)"

register(DatasetSpec(
    name="fashion-mnist", num_classes=10, channels=1, class_names=FASHION_CLASSES,
    mean=(0.2860,), std=(0.3530,), flip_ok=True, default_augment="mnist-crop",
    read=_reader("FashionMNIST", "fashion-mnist"), download=_downloader("FashionMNIST"), pad=2,
    expect=_EXPECT.format("FashionMNIST"),
    install="apt install dataset-fashion-mnist (Debian/Ubuntu; puts it in "
            "/usr/share/datasets/fashion-mnist)",
), help="Fashion-MNIST: 70k 28x28 grey clothing images padded to 32x32, 10 classes")

register(DatasetSpec(
    name="mnist", num_classes=10, channels=1, class_names=DIGITS,
    mean=(0.1307,), std=(0.3081,), flip_ok=False, default_augment="mnist-crop",
    read=_reader("MNIST", "mnist"), download=_downloader("MNIST"), pad=2,
    expect=_EXPECT.format("MNIST"),
), help="MNIST: 70k 28x28 grey digits padded to 32x32, 10 classes; never flipped")
