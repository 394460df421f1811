"""GTSRB (German Traffic Sign Recognition Benchmark) in torchvision's layout, resized and cached.

Train: ROOT/gtsrb/GTSRB/Training/<00000..00042>/*.ppm; test: ROOT/gtsrb/GTSRB/Final_Test/Images/*.ppm
with labels in ROOT/gtsrb/GT-final_test.csv (Stallkamp et al. 2012). The 39k images of varying size
are decoded and resized once; the uint8 arrays are cached as .npz (see ``gtsrb_cache``).
"""
from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError
from . import gtsrb_cache
from .specs import DataMissing, DatasetSpec, Raw, register

CLASSES = (
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)",
    "Speed limit (100km/h)", "Speed limit (120km/h)", "No passing",
    "No passing for vehicles over 3.5 metric tons", "Right-of-way at the next intersection",
    "Priority road", "Yield", "Stop", "No vehicles", "Vehicles over 3.5 metric tons prohibited",
    "No entry", "General caution", "Dangerous curve to the left", "Dangerous curve to the right",
    "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right", "Road work",
    "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing",
    "Beware of ice/snow", "Wild animals crossing", "End of all speed and passing limits",
    "Turn right ahead", "Turn left ahead", "Ahead only", "Go straight or right",
    "Go straight or left", "Keep right", "Keep left", "Roundabout mandatory", "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)
TEST_CSV = "GT-final_test.csv"


def _base(root: Path) -> Path:
    for cand in (root / "gtsrb", root):
        if (cand / "GTSRB").is_dir():
            return cand
    raise DataMissing("no gtsrb/GTSRB/ folder (torchvision's GTSRB layout)")


def _train_files(base: Path) -> list[tuple[Path, int]]:
    folder = base / "GTSRB" / "Training"
    if not folder.is_dir():
        raise DataMissing(f"no {folder.relative_to(base.parent)}/ with class folders 00000..00042")
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not (sub.name.isdigit() and int(sub.name) < len(CLASSES)):
            raise DataError(f"{sub}: unexpected folder in GTSRB/Training (class folders are "
                            "00000..00042)")
        out += [(f, int(sub.name)) for f in sorted(sub.glob("*.ppm"))]
    if not out:
        raise DataMissing(f"{folder} holds no .ppm images")
    return out


def _test_files(base: Path) -> list[tuple[Path, int]]:
    images, table = base / "GTSRB" / "Final_Test" / "Images", base / TEST_CSV
    if not images.is_dir() or not table.is_file():
        raise DataMissing(f"no GTSRB/Final_Test/Images/ with {TEST_CSV} beside GTSRB/")
    out, line = [], 1
    try:
        with open(table, newline="") as fh:
            for line, row in enumerate(csv.DictReader(fh, delimiter=";"), start=2):
                label = int(row["ClassId"])
                if not 0 <= label < len(CLASSES):
                    raise ValueError(f"class {label} out of range")
                out.append((images / row["Filename"], label))
    except (KeyError, TypeError, ValueError, csv.Error) as e:
        raise DataError(f"{table} is corrupt at line {line} ({type(e).__name__}: {e}); expected "
                        "columns Filename;...;ClassId") from None
    missing = [p.name for p, _ in out if not p.is_file()]
    if missing:
        raise DataError(f"{table} lists {len(missing)} image(s) missing from {images} "
                        f"(first: {missing[0]})")
    return out


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):  # PIL's bilinear resize is antialiased when shrinking
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); delete the "
                        "GTSRB folder and fetch it again") from None


def _decode_all(files: list[tuple[Path, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
        arrays = list(pool.map(lambda f: _decode(f[0], size), files))
    images = np.stack(arrays).transpose(0, 3, 1, 2).copy()  # (N, 3, size, size)
    return images, np.array([lab for _, lab in files], dtype=np.int64)


def read(root: Optional[Path], split: str, size: int, *, cache_dir: Optional[str] = None) -> Raw:
    """Read the ``split`` images under ``root``, resized to ``size`` x ``size``, via the cache
    (beside the data, or in ``cache_dir``)."""
    base = _base(Path(root))
    files = _train_files(base) if split == "train" else _test_files(base)
    extra = [base / TEST_CSV] if split == "test" else []
    key = gtsrb_cache.key([f for f, _ in files] + extra, base, split, size)
    cached = gtsrb_cache.load(base, split, size, key, cache_dir)
    if cached is None:
        cached = _decode_all(files, size)
        gtsrb_cache.save(base, split, size, key, *cached, where=cache_dir)
    images, labels = cached
    return Raw(torch.from_numpy(images), torch.from_numpy(labels))


def _download(dest: Path, split: str) -> None:
    import torchvision

    torchvision.datasets.GTSRB(root=str(dest), split=split, download=True)


register(DatasetSpec(
    name="gtsrb", num_classes=43, channels=3, class_names=CLASSES,
    mean=(0.3403, 0.3121, 0.3214), std=(0.2724, 0.2608, 0.2669), flip_ok=False,
    default_augment="gtsrb", read=read, download=_download, sized_by_reader=True,
    options=("cache_dir",),
    expect="gtsrb/GTSRB/Training/<00000..00042>/*.ppm (train) or gtsrb/GTSRB/Final_Test/Images/"
           f"*.ppm with gtsrb/{TEST_CSV} (test)",
), help="GTSRB: 52k traffic signs resized to 32x32, 43 classes; never flipped (mirror-image classes)")
