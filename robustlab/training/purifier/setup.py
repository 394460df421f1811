"""Building a purifier run: data, the frozen extractor(s) and classifier, generator and critic,
and the checks that refuse a combination that cannot train (sizes, channels, shapes)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ... import data as rl_data
from ... import models as rl_models
from ..._checks import check_images
from ...data.geometry import random_hflip
from ...errors import CheckpointError, ConfigError, InputError
from ...purifiers import (CRITICS, Purified, create_critic, create_purifier, critic_min_size,
                          size_multiple, working_sizes)
from .config import PurifierConfig


def load_frozen(path: str, device: torch.device, what: str) -> nn.Module:
    """A classifier checkpoint on ``device``, in eval mode, its parameters frozen."""
    try:
        model = rl_models.load(path, map_location=device, kind="classifier")
    except CheckpointError as exc:
        raise CheckpointError(f"the {what}: {exc}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_channels(model: nn.Module, path: str, ds, what: str) -> None:
    c = getattr(model, "in_channels", None)
    if c is not None and c != ds.channels:
        raise InputError(f"the {what} {path} takes {c}-channel images but {ds.name} has "
                         f"{ds.channels}-channel ones (and the purifier is built for those); use "
                         f"a {what} trained on {ds.name}")


def check_sizes(cfg: PurifierConfig, size: int) -> None:
    """Refuse a generator or critic that cannot take ``size`` x ``size`` images, saying which
    sizes work (and which critics fit this size)."""
    arch, critic = cfg.generator_name(), cfg.critic_name()
    multiple, smallest = size_multiple(arch), critic_min_size(critic)
    if size % multiple == 0 and size >= smallest:
        return
    sizes = ", ".join(map(str, working_sizes(arch, critic)))
    why = (f"the purifier {arch!r} needs sides that are multiples of {multiple}"
           if size % multiple else f"the critic {critic!r} needs images of at least "
           f"{smallest}x{smallest} (its patch map would be empty)")
    fits = [c for c in CRITICS.names() if critic_min_size(c) <= size]
    hint = f"; critics that fit {size}x{size}: {', '.join(fits)}" if fits and size % multiple == 0 else ""
    raise ConfigError(f"{arch} + {critic} cannot train on {size}x{size} images: {why}. Sizes "
                      f"that work: {sizes}, ... (set image_size){hint}")


def build_gan(cfg: PurifierConfig, channels: int, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Generator and critic for ``channels``-channel images (initial weights from the global RNG)."""
    g = create_purifier(cfg.generator_name(), channels, width=cfg.width, **cfg.arch_kwargs)
    d = create_critic(cfg.critic_name(), channels, width=cfg.width, image_size=cfg.image_size,
                      **cfg.critic_kwargs)
    return g.to(device), d.to(device)


def check_purifier_shape(generator: nn.Module, probe: torch.Tensor, name: str) -> None:
    """Refuse a purifier whose output shape or range differs from its input's (eval-mode probe)."""
    was = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            out = generator(probe)
    finally:
        generator.train(was)
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"the purifier {name!r} turned a {tuple(probe.shape)} batch into {got}; "
                         "a purifier must return images of its input's shape")
    check_images(out, name=f"the output of the purifier {name!r}")


def check_defended(generator: nn.Module, classifier: nn.Module, path: str, ds) -> None:
    """The classifier must take the purifier's images and predict the dataset's classes."""
    check_channels(classifier, path, ds, "classifier")
    Purified(generator, classifier)  # its own channel check
    k = getattr(classifier, "num_classes", None)
    if k is not None and k != ds.num_classes:
        raise InputError(f"the classifier {path} predicts {k} classes but {ds.name} has "
                         f"{ds.num_classes}; use a classifier trained on {ds.name}")


def augmenter(cfg: PurifierConfig, ds) -> tuple[str | None, Any]:
    """(preset for batches(), extra batch function or None): flips where the dataset allows."""
    if cfg.augment is None:
        return None, (random_hflip if ds.flip_ok else None)
    if cfg.augment == "flip":
        if not ds.flip_ok:
            raise ConfigError(f"{ds.name} must not be flipped (mirroring changes its classes); "
                              "use augment none or leave it unset")
        return None, random_hflip
    rl_data.AUGMENTATIONS.get(cfg.augment)  # unknown names list the presets
    return cfg.augment, None


def training_data(cfg: PurifierConfig, root: str | None, data: Any = None):
    """The seeded ``subset`` of the training split, or of ``data`` when the run is handed its
    images (labels are loaded but never used)."""
    from ..splits import given_data, load_split

    full = (load_split(cfg, "train", root, size=cfg.image_size) if data is None
            else given_data(cfg, data, size=cfg.image_size))
    return rl_data.take(full, cfg.subset, seed=cfg.seed) if cfg.subset is not None else full
