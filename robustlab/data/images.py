"""Image files and PIL images -> uint8 (C, H, W) tensors: grey stays 1 channel, anything else
becomes RGB (alpha dropped, palettes expanded, 16-bit grey scaled to 8 bits)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .pixels import resize

EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".pnm", ".bmp")
FORMATS = "PNG/JPEG/PPM/BMP"
_GREY = {"1", "L", "LA", "La"}


def is_pil(obj: Any) -> bool:
    """True for a PIL image (PIL is imported only if it is already loaded)."""
    import sys

    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(obj, pil.Image)


def pil_to_tensor(im: Any) -> torch.Tensor:
    """A PIL image as uint8 (1, H, W) when grey, else (3, H, W)."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit grey: 16-bit values scaled to 8 bits
        a = np.asarray(im, dtype=np.float64)
        a = a / 257 if a.size and a.max() > 255 else a
        arr = np.clip(np.round(a), 0, 255).astype(np.uint8)[None]
    elif mode in _GREY:
        arr = np.asarray(im.convert("L"), dtype=np.uint8)[None]
    else:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(np.array(arr, dtype=np.uint8, order="C"))  # a writable copy


def decode_file(path: Path, size: int) -> torch.Tensor:
    """The image file at ``path`` as uint8 (C, size, size) (antialiased bilinear resize, as
    :func:`robustlab.data.pixels.resize`); a file PIL cannot read is a DataError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            t = pil_to_tensor(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path} is not a readable image ({type(e).__name__}: {e}); replace "
                        f"it or delete it") from None
    return resize(t[None], size)[0]
