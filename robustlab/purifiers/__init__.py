"""Learned input purifiers and their training losses.

The SSR report's Pix2Pix purifier (U-Net generators "unet-a"/"unet-b", PatchGAN critics
"patchgan-a"/"patchgan-b", loss presets of its Table 6) and the NRP baseline ("nrp").
A purifier maps [0, 1] images to [0, 1] images of the same shape; ``Purified(purifier,
classifier)`` is the defended model.
"""
from __future__ import annotations

from . import nrp, patchgan, presets, unet_a, unet_b  # noqa: F401  (fill the registries)
from ._registries import CRITICS, LOSS_PRESETS, PURIFIERS
from .factory import (create_critic, create_purifier, critic_min_size, size_multiple,
                      working_sizes)
from .losses import (LossWeights, cgan_d_loss, cgan_g_loss, generator_loss, l1_loss, l2_loss,
                     perceptual_loss)
from .presets import DEFAULT_LOSS_PRESET, LossPreset
from .purified import Purified

__all__ = [
    "PURIFIERS", "CRITICS", "LOSS_PRESETS", "DEFAULT_LOSS_PRESET", "create_purifier", "create_critic",
    "Purified", "LossWeights", "LossPreset", "l1_loss", "l2_loss", "perceptual_loss", "cgan_d_loss",
    "cgan_g_loss", "generator_loss", "size_multiple", "critic_min_size", "working_sizes",
]
