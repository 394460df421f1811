"""Writers of tiny dataset fixtures in the real on-disk formats, for tests of robustlab.data and the CLI.

Each writer puts files under ``root`` in the layout ``robustlab.data.load(name, root=root)`` (and
torchvision) expects, and returns the exact arrays it wrote so tests can compare pixel values::

    from data_fixtures import write_cifar10
    arrays = write_cifar10(tmp_path, n_train=10, n_test=4)
    images, labels = arrays["test"]          # uint8 (4, 3, 32, 32), int64 (4,)

Pixel values are random but deterministic (``seed``). Nothing here imports robustlab.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Union

import numpy as np

PathLike = Union[str, Path]
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images, labels)


def write_cifar10(root: PathLike, n_train: int, n_test: int, seed: int = 0) -> Arrays:
    """CIFAR-10 python batches: ROOT/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta.

    Each batch is a pickled dict with b"data" (N, 3072) uint8 (channel-major rows, as the real
    files) and b"labels" (list of int). ``n_train`` is spread over the five training batches.
    Returns {"train": (uint8 (n_train, 3, 32, 32), int64 labels), "test": (...)}.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    out: Arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.int64)
        out[split] = (images, labels)
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        for name, idx in zip(names, np.array_split(np.arange(n), len(names))):
            batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels[idx]],
                     b"data": images[idx].reshape(len(idx), 3072),
                     b"filenames": [f"img_{i}.png".encode() for i in idx]}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_cases_per_batch": 10000,
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


def write_ppm(path: PathLike, image_hwc: np.ndarray) -> None:
    """A binary (P6) PPM file, written by hand (no PIL), from a uint8 (H, W, 3) array."""
    h, w, _ = image_hwc.shape
    Path(path).write_bytes(f"P6\n{w} {h}\n255\n".encode() + np.ascontiguousarray(image_hwc).tobytes())


def write_gtsrb(root: PathLike, n_per_class_train: int, n_test: int, seed: int = 0,
                sizes: tuple[int, ...] = (32,)) -> Arrays:
    """GTSRB in torchvision's layout under ROOT/gtsrb/.

    Train: GTSRB/Training/<00000..00042>/<class>_<i>.ppm (plus each folder's GT-<class>.csv);
    test: GTSRB/Final_Test/Images/<i>.ppm with labels in GT-final_test.csv (semicolon separated).
    Image side lengths cycle through ``sizes`` (the real images vary, 15 to 250 px); with the
    default ``(32,)`` the returned arrays are exactly what ``load(..., size=32)`` must give.
    Returns {"train": (uint8 (N, 3, H, W) or a list if sizes differ, int64), "test": (...)}.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "gtsrb"
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
    train_imgs, train_labels, k = [], [], 0
    for c in range(43):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n_per_class_train):
            s = sizes[k % len(sizes)]
            k += 1
            img = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
            name = f"{c:05d}_{i:05d}.ppm"
            write_ppm(folder / name, img)
            rows.append(f"{name};{s};{s};1;1;{s - 1};{s - 1};{c}\n")
            train_imgs.append(img.transpose(2, 0, 1))
            train_labels.append(c)
        (folder / f"GT-{c:05d}.csv").write_text(header + "".join(rows))
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True, exist_ok=True)
    test_imgs, test_labels, rows = [], [], []
    for i in range(n_test):
        s = sizes[i % len(sizes)]
        img = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
        c = int(rng.integers(0, 43))
        write_ppm(test_dir / f"{i:05d}.ppm", img)
        rows.append(f"{i:05d}.ppm;{s};{s};1;1;{s - 1};{s - 1};{c}\n")
        test_imgs.append(img.transpose(2, 0, 1))
        test_labels.append(c)
    (base / "GT-final_test.csv").write_text(header + "".join(rows))

    def stack(imgs: list) -> np.ndarray | list:
        return np.stack(imgs) if len(sizes) == 1 and imgs else imgs

    return {"train": (stack(train_imgs), np.array(train_labels, dtype=np.int64)),
            "test": (stack(test_imgs), np.array(test_labels, dtype=np.int64))}


IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
TORCHVISION_FOLDERS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte idx file: magic 0x0000080<ndim>, big-endian int32 dims, then the data."""
    head = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return head + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(root: PathLike, n_train: int, n_test: int, gz: bool = True, layout: str = "flat",
              name: str = "fashion-mnist", seed: int = 0) -> Arrays:
    """Fashion-MNIST / MNIST idx files (28x28 grey), gzipped (``.gz``) or plain.

    ``layout="flat"`` puts the four files directly in ROOT (as Debian's dataset-fashion-mnist
    does); ``layout="torchvision"`` puts them in ROOT/FashionMNIST/raw/ or ROOT/MNIST/raw/.
    Returns {"train": (uint8 (n, 28, 28), int64 (n,)), "test": (...)}.
    """
    if layout not in ("flat", "torchvision"):
        raise ValueError(f"layout must be 'flat' or 'torchvision', got {layout!r}")
    rng = np.random.default_rng(seed)
    folder = Path(root) if layout == "flat" else Path(root) / TORCHVISION_FOLDERS[name] / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    out: Arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.int64)
        out[split] = (images, labels)
        for fname, arr in zip(IDX_FILES[split], (images, labels.astype(np.uint8))):
            data = idx_bytes(arr)
            if gz:
                (folder / (fname + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / fname).write_bytes(data)
    return out


def write_image_folder(root: PathLike, images: np.ndarray, labels: np.ndarray,
                       split: str = "", ext: str = ".png") -> list[Path]:
    """Your-own-data images: ROOT[/split]/<label>/<i:05d><ext> (PNG by default, written with PIL),
    from uint8 (N, C, H, W) images with C 1 or 3. The folder loader visits classes in order and
    each class's files by name, so it returns the samples stably sorted by label.
    Returns the paths written, in the order of ``images``."""
    from PIL import Image

    paths = []
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = Path(root) / split / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        hwc = np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(1, 2, 0))
        path = folder / f"{i:05d}{ext}"
        Image.fromarray(hwc[..., 0] if hwc.shape[-1] == 1 else hwc).save(path)
        paths.append(path)
    return paths


def write_npz(path: PathLike, images: np.ndarray, labels: np.ndarray, **extra) -> Path:
    """An .npz of the npz dataset: x uint8 (N, H, W, C) from (N, C, H, W) images, y labels, and
    any ``extra`` arrays (class_names=...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.asarray(images).transpose(0, 2, 3, 1), y=np.asarray(labels), **extra)
    return path
