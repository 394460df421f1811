"""CIFAR-10 from the python-pickle batches torchvision downloads (``cifar-10-batches-py/``).

The batches are pickles; they are read with a restricted unpickler that resolves only the numpy
globals an array needs, so a tampered file cannot run code (Krizhevsky 2009, the dataset).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import DataError
from .specs import DataMissing, DatasetSpec, Raw, register

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _allowed() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    import codecs

    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                       ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = _reconstruct
        out[(mod, "scalar")] = scalar
    return out


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy's array reconstruction globals; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed().get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (only numpy "
                                         "arrays are allowed in a CIFAR-10 batch)")
        return obj


def safe_unpickle(path: Path) -> Any:
    """Unpickle ``path`` allowing only numpy arrays, builtin containers and scalars."""
    try:
        data = path.read_bytes()
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # truncated or crafted files raise many different types
        raise DataError(f"{path} is corrupt, truncated or not a CIFAR-10 pickle ({type(e).__name__}: "
                        f"{e}); delete it and fetch the dataset again") from None


def _field(d: Any, key: str, path: Path) -> Any:
    if isinstance(d, dict):
        for k in (key.encode(), key):
            if k in d:
                return d[k]
    raise DataError(f"{path} is not a CIFAR-10 batch: no {key!r} entry")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = safe_unpickle(path)
    data = _field(d, "data", path)
    labels = np.asarray(_field(d, "labels", path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be a uint8 (N, 3072) array, got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected {data.shape[0]} integer labels, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must lie in [0, 9]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _folder(root: Path) -> Path:
    for cand in (root / FOLDER, root):
        if any((cand / f).is_file() for f in _FILES["train"] + _FILES["test"]):
            return cand
    raise DataMissing(f"no {FOLDER}/ folder with data_batch_1..5 and test_batch")


def read(root: Optional[Path], split: str, size: int) -> Raw:
    """Read the ``split`` batches under ``root`` (or ``root/cifar-10-batches-py``)."""
    folder = _folder(Path(root))
    missing = [f for f in _FILES[split] if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder} is incomplete: {', '.join(missing)} missing; fetch the "
                        "dataset again")
    parts = [_read_batch(folder / f) for f in _FILES[split]]
    names: Optional[tuple[str, ...]] = None
    if (folder / "batches.meta").is_file():
        raw = _field(safe_unpickle(folder / "batches.meta"), "label_names", folder / "batches.meta")
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
        if len(names) != 10:
            raise DataError(f"{folder / 'batches.meta'}: expected 10 label names, got {len(names)}")
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return Raw(images, labels, names)


def _download(dest: Path, split: str) -> None:
    import torchvision

    torchvision.datasets.CIFAR10(root=str(dest), train=split == "train", download=True)


SPEC = register(DatasetSpec(
    name="cifar10", num_classes=10, channels=3, class_names=CLASSES,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), flip_ok=True,
    default_augment="cifar", read=read, download=_download,
    expect=f"{FOLDER}/ (data_batch_1..5, test_batch, batches.meta)",
), help="CIFAR-10: 60k 32x32 colour images, 10 classes (torchvision's python pickles)")
