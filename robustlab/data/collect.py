"""Reading the data a user brings (a torch Dataset, a DataLoader, an (x, y) pair) into one
(N, C, H, W) image tensor and its labels, checking every sample; :mod:`robustlab.data.adapt`
builds on it."""
from __future__ import annotations

import logging
import numbers
from typing import Any, Optional

import torch

from ..errors import InputError
from .images import is_pil, pil_to_tensor
from .pixels import resize, same_channels

_log = logging.getLogger(__name__)
ACCEPTED = ("a robustlab ImageDataset, a torch Dataset yielding (image, label) (tensors in [0, 1] "
            "or PIL images), a DataLoader yielding (x, y) batches, or an (x, y) pair of tensors")
_GRID_TOLERANCE = 1e-3  # in 1/255 steps: float32 k/255 is within 2e-5 of the grid


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


def _is_pair(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], tuple)


def _label(label: Any, where: str) -> int:
    if isinstance(label, torch.Tensor) and label.numel() == 1 and not label.is_floating_point() \
            and label.dtype != torch.bool:
        return int(label)
    if isinstance(label, numbers.Integral) and not isinstance(label, bool):
        return int(label)
    raise InputError(f"{where}: the label is {label!r}; expected an integer class index")


def _image(img: Any, where: str) -> torch.Tensor:
    if is_pil(img):
        return pil_to_tensor(img)
    if not isinstance(img, torch.Tensor):
        raise InputError(f"{where}: the image is a {type(img).__name__}; expected a (C, H, W) "
                         "tensor or a PIL image (a numpy (H, W, C) array: "
                         "torch.from_numpy(a).permute(2, 0, 1))")
    img = img.detach().cpu()
    if img.dim() == 2:  # (H, W): one grey channel
        img = img[None]
    if img.dim() != 3 or (img.dtype != torch.uint8 and not img.is_floating_point()):
        raise InputError(f"{where}: the image is a {img.dtype} tensor of shape {tuple(img.shape)}; "
                         "expected (C, H, W), float in [0, 1] or uint8")
    return img


def _samples(ds: Any, what: str, limit: Optional[int]) -> tuple[list[torch.Tensor], list[int]]:
    """Every (image, label) of a Dataset, checked, up to ``limit`` of them."""
    iterable = isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__")
    items = iter(ds) if iterable else (ds[i] for i in range(len(ds)))
    images, labels = [], []
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            break
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InputError(f"{what}[{i}] is {_describe(item)}, not an (image, label) pair; a "
                             "Dataset must yield (image, label): the image a (C, H, W) tensor "
                             "in [0, 1] (or uint8) or a PIL image, the label an integer class")
        images.append(_image(item[0], f"{what}[{i}]"))
        labels.append(_label(item[1], f"{what}[{i}]"))
    return images, labels


def _stack(images: list[torch.Tensor], what: str, size: Optional[int]) -> torch.Tensor:
    """One (N, C, H, W) tensor: one channel count (grey repeated to RGB, with a note), one size
    (``size`` resizes; without it sizes must agree), one dtype (uint8 unless any is float)."""
    if not images:
        raise InputError(f"{what} holds no samples")
    images, grey = same_channels(images)
    if grey:
        _log.warning("%s mixes grey and colour images; the %d grey ones are repeated to RGB",
                     what, grey)
    floats = [im.dtype for im in images if im.is_floating_point()]
    if floats:
        images = [im.to(floats[0]).div_(255) if im.dtype == torch.uint8 else im.to(floats[0])
                  for im in images]
    if size is not None:  # only as_dataset resizes, after making the images exact uint8
        images = [resize(im[None], size)[0] for im in images]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        a, b = sorted(shapes)[:2]
        raise InputError(f"{what}: images differ in size ({a} and {b}); pass size=S to resize "
                         "them to S x S")
    return torch.stack(images)


def _batches(loader: Any, limit: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, seen = [], [], 0
    try:
        for b, batch in enumerate(loader):
            if limit is not None and seen >= limit:
                break
            if not isinstance(batch, (tuple, list)) or len(batch) != 2 \
                    or not isinstance(batch[0], torch.Tensor) or batch[0].dim() != 4:
                raise InputError(f"batch {b} of the DataLoader is {_describe(batch)}, not an "
                                 "(x, y) pair with x a (B, C, H, W) tensor")
            xs.append(batch[0].detach().cpu())
            ys.append(torch.as_tensor(batch[1]).cpu())
            seen += len(batch[0])
    except TypeError as e:  # default_collate cannot batch PIL images and the like
        raise InputError(f"the DataLoader could not make a batch ({e}); give its dataset a "
                         "transform that returns tensors, or pass the Dataset itself") from None
    if not xs:
        raise InputError("the DataLoader yielded no batches")
    if len({tuple(x.shape[1:]) for x in xs}) > 1 or len({x.dtype for x in xs}) > 1:
        raise InputError("the DataLoader's batches differ in image shape or dtype")
    return torch.cat(xs), torch.cat(ys)


def collect(data: Any, limit: Optional[int], size: Optional[int] = None,
            to_uint8: bool = False):
    """(x, y, what): x (N, C, H, W) uint8 or float as given, y as given (pairs) or int64. A
    Dataset's images are resized to ``size`` when given (in uint8, after :func:`exact_uint8`, with
    ``to_uint8``)."""
    if _is_pair(data):
        x, y = data
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise InputError(f"an (x, y) pair must hold torch tensors, got {type(x).__name__} and "
                             f"{type(y).__name__} (numpy arrays: torch.from_numpy)")
        return x[:limit], y[:limit], "tensors"
    if isinstance(data, torch.utils.data.DataLoader):
        x, y = _batches(data, limit)
        return x[:limit], y[:limit], "DataLoader"
    if isinstance(data, torch.utils.data.Dataset):
        what = type(data).__name__
        images, labels = _samples(data, what, limit)
        if to_uint8:
            images = [exact_uint8(im, f"{what}[{i}]") for i, im in enumerate(images)]
        return _stack(images, what, size), torch.tensor(labels, dtype=torch.int64), what
    raise InputError(f"data must be {ACCEPTED}; got {_describe(data)}")


def exact_uint8(x: torch.Tensor, what: str) -> torch.Tensor:
    """Float images on the 1/255 grid as uint8; anything else is refused, never rounded."""
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise InputError(f"{what}: images must be float in [0, 1] or uint8, got {x.dtype}")
    steps = x.detach().cpu().double() * 255
    if steps.numel() and not bool(torch.isfinite(steps).all()):
        raise InputError(f"{what}: images contain NaN or infinite values")
    if steps.numel() and (float(steps.min()) < 0 or float(steps.max()) > 255):
        raise InputError(f"{what}: images must lie in [0, 1], got values in "
                         f"[{float(steps.min()) / 255:.3g}, {float(steps.max()) / 255:.3g}]")
    off = (steps - steps.round()).abs()
    if off.numel() and float(off.max()) > _GRID_TOLERANCE:
        v = float(x.flatten()[int(off.flatten().argmax())])
        raise InputError(f"{what}: float images are not multiples of 1/255 (e.g. {v:.6g}); "
                         "training data is held as uint8 pixels and robustlab does not round "
                         "them silently: pass uint8 images, or round them yourself with "
                         "(x * 255).round() / 255")
    return steps.round_().to(torch.uint8)
