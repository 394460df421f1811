"""Building the classifier a run trains: from the registry, optionally from an ``--init``
checkpoint of the same backbone, optionally with all but its head frozen (linear probe)."""
from __future__ import annotations

import torch

from ... import models as rl_models
from ...errors import CheckpointError, ConfigError
from .config import TrainConfig


def build_model(cfg: TrainConfig, info) -> torch.nn.Module:
    # model_kwargs may override the dataset's statistics (e.g. ImageNet's for pretrained weights)
    kwargs = {"mean": info.mean, "std": info.std, **cfg.model_kwargs}
    model = rl_models.create(cfg.model, num_classes=info.num_classes, in_channels=info.channels,
                             width=cfg.width, **kwargs)
    if cfg.init:
        init_from(model, cfg.init)
    return model


def freeze_body(model: torch.nn.Module) -> None:
    """Linear probe: only the last nn.Linear learns (batch-norm statistics are frozen per epoch)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no linear layer to probe")
    head = linears[-1]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)


def init_from(model: torch.nn.Module, path: str) -> None:
    """Start from the weights of a saved checkpoint (e.g. a pre-trained encoder) of the same
    architecture; a different backbone is refused with what differs and how to ask for it."""
    try:
        source = rl_models.load(path, kind="classifier")
    except CheckpointError as exc:
        raise CheckpointError(f"--init: {exc}") from None
    want = getattr(model, "robustlab_spec", {})
    have = getattr(source, "robustlab_spec", {})
    keys = ("width", "in_channels", "num_classes")
    diffs = [k for k in keys if want.get("kwargs", {}).get(k) != have.get("kwargs", {}).get(k)]
    if want.get("name") != have.get("name") or diffs:
        got = ", ".join(f"{k} {have.get('kwargs', {}).get(k)}" for k in keys)
        asked = ", ".join(f"{k} {want.get('kwargs', {}).get(k)}" for k in keys)
        raise CheckpointError(
            f"the backbone does not match: --init {path} holds a {have.get('name')} ({got}) but "
            f"this run builds a {want.get('name')} ({asked}); train with --model "
            f"{have.get('name')} --width {have.get('kwargs', {}).get('width')} on a dataset with "
            "the same channels and classes, or pick another checkpoint")
    try:
        model.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"--init {path} does not fit the requested model: "
                              f"{str(exc).splitlines()[0]}") from None
