"""The purifier trainer: the SSR report's self-supervised Pix2Pix training (Algorithm 2) and the
NRP baseline. ``config`` (settings and loss presets), ``setup`` (frozen networks, G and D),
``steps`` (one critic and one generator step), ``monitor`` (held-out scores and image grids),
``trainer`` (the loop)."""
from .config import PurifierConfig
from .trainer import train_purifier

__all__ = ["PurifierConfig", "train_purifier"]
