"""The three registries of this sub-package (kept apart so every module can register into them)."""
from __future__ import annotations

from ..registry import Registry

PURIFIERS: Registry = Registry("purifier")  # name -> nn.Module factory, [0,1] images -> [0,1] images
CRITICS: Registry = Registry("critic")  # name -> nn.Module factory, (x_cond, x_other) -> patch logits
LOSS_PRESETS: Registry = Registry("loss preset")  # name -> LossPreset (loss weights + arch names)
