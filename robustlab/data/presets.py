"""Named, batched augmentation presets (the ``AUGMENTATIONS`` registry) and :func:`augment`.

Every preset maps float (B, C, H, W) images in [0, 1] to images of the same shape in [0, 1], using
only the torch.Generator it is given, so a seeded run is exactly reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .._checks import check_images
from ..errors import ConfigError
from ..registry import Registry
from .colour import colour_jitter, random_grayscale
from .geometry import random_affine, random_crop, random_hflip, random_resized_crop

AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Augmentation:
    """A preset: the batched function and whether it may mirror images left-right."""

    fn: AugmentFn
    flips: bool


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


def _preset(name: str, help: str, flips: bool) -> Callable[[AugmentFn], AugmentFn]:
    def deco(fn: AugmentFn) -> AugmentFn:
        AUGMENTATIONS.register(name, help=help)(Augmentation(fn, flips))
        return fn
    return deco


@_preset("none", "no augmentation", flips=False)
def _none(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x


@_preset("cifar", "pad 4 (reflect) + random crop back to size, horizontal flip p=0.5", flips=True)
def _cifar(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return random_hflip(random_crop(x, 4, g, "reflect"), g)


@_preset("mnist-crop", "pad 2 (zeros) + random crop back to size, no flip (digits, clothes)",
         flips=False)
def _mnist_crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return random_crop(x, 2, g, "constant")


@_preset("gtsrb", "traffic signs: colour jitter 0.3 + affine (rotate 10 deg, shift 2 px, scale "
         "0.9-1.1); no flip, no crop", flips=False)
def _gtsrb(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = colour_jitter(x, g, brightness=0.3, contrast=0.3, saturation=0.3)
    return random_affine(x, g, degrees=10.0, translate=2.0, scale=(0.9, 1.1)).clamp(0, 1)


def _simclr_colour(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = colour_jitter(x, g, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8)
    return random_grayscale(x, g, p=0.2)


@_preset("simclr", "SimCLR/ACL views: resized crop 0.1-1, flip, colour jitter (0.4,0.4,0.4,0.1) "
         "p=0.8, greyscale p=0.2", flips=True)
def _simclr(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = random_resized_crop(x, g, scale=(0.1, 1.0), flip=True).clamp(0, 1)
    return _simclr_colour(x, g)


@_preset("simclr-signs", "SimCLR/ACL views for traffic signs: colour jitter (0.4,0.4,0.4,0.1) "
         "p=0.8, greyscale p=0.2; no crop, no flip", flips=False)
def _simclr_signs(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return _simclr_colour(x, g)


def refuse_flips(preset: str, flip_ok: bool, dataset: str = "this dataset") -> Augmentation:
    """The preset, or ConfigError if it flips and the data must not be flipped."""
    aug = AUGMENTATIONS.get(preset)
    if aug.flips and not flip_ok:
        safe = ", ".join(n for n in AUGMENTATIONS.names() if not AUGMENTATIONS.get(n).flips)
        raise ConfigError(f"{dataset} must not be flipped: augmentation {preset!r} mirrors images "
                          "left-right, which changes the class of mirror-image traffic signs and "
                          f"digits; use one of: {safe}")
    return aug


def augment(x: torch.Tensor, preset: str, generator: torch.Generator,
            flip_ok: bool = True) -> torch.Tensor:
    """Apply the named augmentation preset to a batch.

    Args:
        x: float (B, C, H, W) images in [0, 1]; not modified.
        preset: a name in ``AUGMENTATIONS`` (``robustlab list`` shows them).
        generator: the only source of randomness; the same state gives the same output.
        flip_ok: False for data whose labels change under a mirror (gtsrb, digits); a preset that
            flips then raises ConfigError.
    Returns:
        float (B, C, H, W) images in [0, 1]. SimCLR settings follow Chen et al. 2020 / ACL (Jiang
        et al. 2020); "cifar" is the standard pad-crop-flip of He et al. 2016.
    """
    aug = refuse_flips(preset, flip_ok)
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"augment needs a torch.Generator (randomness is explicit), got "
                          f"{type(generator).__name__}")
    check_images(x)
    return aug.fn(x, generator)
