"""Loss presets of the SSR report's ablation (Table 6): weights plus the generator/critic pair."""
from __future__ import annotations

from dataclasses import dataclass, fields

from ._registries import LOSS_PRESETS
from .losses import LossWeights


@dataclass(frozen=True)
class LossPreset(LossWeights):
    """A :class:`LossWeights` (usable wherever one is expected) that also names the architectures
    it was reported with: ``generator`` (a PURIFIERS name) and ``critic`` (a CRITICS name)."""

    generator: str = "unet-b"
    critic: str = "patchgan-b"

    @property
    def weights(self) -> LossWeights:
        """The bare weights, without the architecture names."""
        return LossWeights(**{f.name: getattr(self, f.name) for f in fields(LossWeights)})


def _add(name: str, help: str, **kw) -> None:
    LOSS_PRESETS.register(name, help=help)(LossPreset(**kw))


# Table 6 of the report; the cGAN term always has weight 1 (eq. 4 and 5).
_add("A-L1", "arch A (unet-a + patchgan-a), cGAN + L1 (lambda 100): Pix2Pix's loss",
     cgan=1.0, l1=100.0, l2=0.0, perceptual=0.0, generator="unet-a", critic="patchgan-a")
_add("B1", "arch B, cGAN + perceptual (alpha 10)",
     cgan=1.0, l1=0.0, l2=0.0, perceptual=10.0)
_add("B2", "arch B, cGAN + perceptual (alpha 100)",
     cgan=1.0, l1=0.0, l2=0.0, perceptual=100.0)
_add("B3", "arch B, cGAN + perceptual (alpha 100) + L2 (lambda 10): the report's choice (default)",
     cgan=1.0, l1=0.0, l2=10.0, perceptual=100.0)
# The NRP baseline (Naseer et al. 2020) trained through the same loop: pixel + perceptual + critic
# terms. NRP's relativistic critic and its exact weights are not in the SSR report; robustlab uses
# its cGAN/PatchGAN critic and ESRGAN's weights (Wang et al. 2018), from which NRP's loss derives:
# critic 5e-3, L1 pixel 1e-2, perceptual 1.
_add("NRP", "NRP baseline (nrp + patchgan-b): cGAN 5e-3 + L1 1e-2 + perceptual 1 (ESRGAN's "
     "weights)", cgan=5e-3, l1=1e-2, l2=0.0, perceptual=1.0, generator="nrp", critic="patchgan-b")

DEFAULT_LOSS_PRESET = "B3"
