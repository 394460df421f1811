"""Where a trainer's dataset lives: on the GPU as uint8 when it fits, else in pinned host memory.

On CUDA the whole dataset is moved once, when the run is built, so every batch is an
``index_select`` on the GPU and augmented there (:func:`robustlab.data.batches`): the GPU never
waits for the CPU. A dataset too large for the free GPU memory stays on the host, in pinned
(page-locked) memory, so each batch's copy to the GPU is asynchronous (``non_blocking``). Off
CUDA nothing moves: ``place`` returns the dataset itself.
"""
from __future__ import annotations

import logging
from typing import Optional, Union

import torch

from .dataset import ImageDataset

# the dataset may take at most this share of the GPU memory free when the run is built; the
# rest is the model's, the optimiser's and the activations' (an attack keeps a few batches alive)
GPU_SHARE = 0.5
log = logging.getLogger(__name__)


def dataset_bytes(ds: ImageDataset) -> int:
    """Bytes of ``ds``'s images and labels."""
    return ds.images.numel() * ds.images.element_size() + ds.labels.numel() * 8


def where_to_keep(nbytes: int, device: Union[str, torch.device], free_bytes: Optional[int],
                  share: float = GPU_SHARE) -> str:
    """"as-is" off CUDA; on CUDA "device" when ``nbytes`` fit in ``share`` of ``free_bytes``
    (the GPU's free memory), else "pinned" (host memory the GPU copies from asynchronously)."""
    if torch.device(device).type != "cuda":
        return "as-is"
    if free_bytes is not None and nbytes <= share * free_bytes:
        return "device"
    return "pinned"


def place(ds: Optional[ImageDataset], device: Union[str, torch.device], *,
          free_bytes: Optional[int] = None) -> Optional[ImageDataset]:
    """``ds`` where a run on ``device`` reads it fastest (see the module docstring).

    Args:
        ds: an :class:`ImageDataset` (uint8 images, wherever they are), or None (no validation
            split, say): None is returned.
        device: the run's device. Off CUDA ``ds`` itself is returned (the same object).
        free_bytes: the GPU's free memory (default: ``torch.cuda.mem_get_info``); for tests.
    Returns:
        An ImageDataset with the same metadata whose images and labels are on ``device``, or in
        pinned host memory; ``ds`` itself when nothing needs to change.
    """
    device = torch.device(device)
    if ds is None:
        return None
    if device.type != "cuda":  # nothing moves, and nothing of ds is read (pre-training's labels)
        return ds
    if device.type == "cuda" and free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    where = where_to_keep(dataset_bytes(ds), device, free_bytes)
    if where == "as-is":
        return ds
    if where == "device":
        images, labels = ds.images.to(device), ds.labels.to(device)
    else:
        images, labels = _pinned(ds.images), _pinned(ds.labels)
    if images is ds.images and labels is ds.labels:
        return ds
    return _like(ds, images, labels)


def _pinned(t: torch.Tensor) -> torch.Tensor:
    """``t`` in pinned host memory (itself when it already is)."""
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_pinned():
        return t
    try:
        return t.pin_memory()
    except RuntimeError as exc:  # page-locked memory is limited: pageable copies still work
        log.warning("could not pin %.1f MiB of host memory (%s); batches are copied from "
                    "pageable memory", t.numel() * t.element_size() / 2**20, exc)
        return t


def _like(ds: ImageDataset, images: torch.Tensor, labels: torch.Tensor) -> ImageDataset:
    return ImageDataset(images, labels, name=ds.name, num_classes=ds.num_classes,
                        class_names=ds.class_names, mean=ds.mean, std=ds.std,
                        flip_ok=ds.flip_ok, default_augment=ds.default_augment)
