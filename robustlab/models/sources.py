"""One entry point for every way of naming a classifier: :func:`open_model`.

``open_model(text, ModelSource(...))`` accepts what ``--model`` accepts::

    runs/std/model.safetensors          a robustlab checkpoint (weights + JSON sidecar)
    m.pt / m.pth / m.safetensors        a plain state_dict, with arch= (--arch) naming its network
    torchvision:NAME, timm:NAME         a network from elsewhere, weights= (--weights) optional
    python:MODULE:FACTORY               your own code (trust_code=True / --trust-code)
    small-cnn (with weights=)           a registered architecture and a state_dict for it

and ``own_module.from_module`` makes a module of your own savable (``save(model, path,
source=...)``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .._checks import check_int, check_positive
from ..errors import CheckpointError, ConfigError, RobustlabError
from .external import trusting
from .factory import MODELS, SOURCE_FORMS, create
from .normalize import named_stats
from .prefixes import class_count
from .weights import fit_problems, load_weights, read_state_dict, shapes, target_of

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")
log = logging.getLogger("robustlab")


@dataclass(frozen=True)
class ModelSource:
    """How to build a classifier that is not a robustlab checkpoint (the ``--model`` flags).

    ``arch``: the network of a plain state_dict file; ``weights``: a state_dict for a network
    named by ``--model``; ``num_classes`` (default: the network's own), ``in_channels`` (3),
    ``input_size`` (resize inside the model), ``mean``/``std`` or ``normalization`` (a name:
    imagenet, cifar10, ...; default none for networks from elsewhere), ``width`` (registered
    architectures), ``args`` (more keyword arguments for the network's constructor) and
    ``trust_code`` (allow ``python:`` code, also in checkpoints).
    """

    arch: Optional[str] = None
    weights: Optional[str] = None
    num_classes: Optional[int] = None
    in_channels: Optional[int] = None
    input_size: Optional[int] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    normalization: Optional[str] = None
    width: Optional[float] = None
    args: dict[str, Any] = field(default_factory=dict)
    trust_code: bool = False

    def __post_init__(self) -> None:
        for name, minimum in (("num_classes", 2), ("in_channels", 1), ("input_size", 1)):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum)
        if self.width is not None:
            check_positive("width", self.width)
        if self.normalization is not None:
            if self.mean is not None or self.std is not None:
                raise ConfigError("give either a named normalization or mean/std, not both")
            named_stats(self.normalization)
        if not isinstance(self.args, dict):
            raise ConfigError(f"args must be a mapping, got {self.args!r}")

    def building_options(self) -> list[str]:
        """The options given that only a network being built uses (not a checkpoint)."""
        names = ("arch", "weights", "num_classes", "in_channels", "input_size", "mean", "std",
                 "normalization", "width")
        return [n for n in names if getattr(self, n) is not None] + (["args"] if self.args else [])


def open_model(text: str | Path, options: ModelSource | None = None) -> nn.Module:
    """The classifier ``text`` names (see the module docstring), in eval mode on the CPU.

    Raises:
        CheckpointError / ConfigError: naming what is wrong and what to pass instead.
    """
    from .checkpoint import checkpoint_paths, load

    o = options or ModelSource()
    text = str(text)
    if MODELS.source_of(text) is not None or (o.weights is not None and text in MODELS):
        return _built(text, o, text)
    path = Path(text)
    weights, sidecar = checkpoint_paths(text)
    if text in MODELS and not (weights.is_file() or sidecar.is_file()):
        raise ConfigError(f"{text} is an architecture, not a checkpoint: give its weights with "
                          "--weights FILE (weights=), a state_dict")
    if path.suffix in STATE_DICT_SUFFIXES or (o.arch is not None and not sidecar.is_file()):
        if o.arch is None:
            raise CheckpointError(f"{text} is a plain state_dict file (no robustlab sidecar): "
                                  "name its network with --arch NAME (arch=), e.g. --arch "
                                  f"resnet18 or --arch torchvision:resnet18 ({SOURCE_FORMS})")
        if o.weights is not None:
            raise ConfigError(f"{text} is itself the weights: give --arch with it, not --weights")
        return _built(o.arch, o, text, weights=text)
    given = o.building_options()
    if given:
        raise ConfigError(f"{text} is a robustlab checkpoint, whose sidecar records how to "
                          f"build it; drop {', '.join('--' + g.replace('_', '-') for g in given)} "
                          "(to mix checkpoints and other models in one command, turn the others "
                          "into checkpoints first: robustlab import-model)")
    return load(weights, kind="classifier", trust_code=o.trust_code)


def _built(name: str, o: ModelSource, label: str, weights: str | None = None) -> nn.Module:
    """``create(name, ...)`` from the options, then the state_dict file if there is one."""
    weights = weights if weights is not None else o.weights
    external = MODELS.source_of(name) is not None
    if external:
        kw: dict[str, Any] = {"input_size": o.input_size, "args": dict(o.args) or None}
    else:  # a registered architecture takes its own options as keywords
        kw = {**o.args, **({} if o.input_size is None else {"input_size": o.input_size})}
    mean, std = named_stats(o.normalization) if o.normalization else (o.mean, o.std)
    in_channels = o.in_channels or 3
    with trusting(o.trust_code):
        MODELS.get(name)  # the name first: an unknown one, a missing package, untrusted code
        state = read_state_dict(weights) if weights is not None else None
        k = o.num_classes or _class_count(name, in_channels, o.width or 1.0, kw, state,
                                           weights)
        model = create(name, k, in_channels, width=o.width or 1.0, mean=mean, std=std, **kw)
    if state is not None:
        load_weights(model, state, where=weights)
    else:
        log.warning("%s has no --weights: its weights are random", label)
    model.eval()
    model.robustlab_origin = {"model": label, "arch": name, "weights": weights}
    return model


def _class_count(name: str, in_channels: int, width: float, kw: dict[str, Any],
                 state: dict[str, torch.Tensor] | None, where: str | None) -> int:
    """The class count of the weights (the dimension that changes between a 2- and a 3-class
    build on the meta device), else the network's own (``torchvision:``/``timm:``/``python:``)."""
    builds = _meta_builds(name, in_channels, width, kw, state) if state is not None else None
    if builds is not None:
        found = {state[key].shape[d] for key, a in builds[0].items() if key in state
                 and a != builds[1].get(key) and len(a) == state[key].dim()
                 for d in range(len(a)) if a[d] == 2 and builds[1][key][d] == 3}
        if len(found) == 1:
            return found.pop()
        own = {k: v for k, v in builds[0].items()  # a file may leave out the normalisation
               if k in state or not k.startswith("normalize.")}
        problems = fit_problems(own, shapes(state))
        if MODELS.source_of(name) is None and problems and "keys (" in problems:
            raise CheckpointError(f"{where} does not fit {name}: {problems} (check --arch)")
    if MODELS.source_of(name) is None:
        raise ConfigError(f"{name} needs --num-classes (num_classes=): robustlab architectures "
                          "have no class count of their own")
    return class_count(name, in_channels, kw.get("input_size"), kw.get("args"))


def _meta_builds(name: str, in_channels: int, width: float, kw: dict[str, Any],
                 state: dict[str, torch.Tensor]) -> list[dict[str, tuple[int, ...]]] | None:
    """The state_dict shapes of a 2- and a 3-class build on the meta device (None for user code
    that cannot run there: the class count then comes from elsewhere)."""
    builds = []
    for k in (2, 3):
        try:
            with torch.device("meta"):
                model = create(name, k, in_channels, width=width, **kw)
        except RobustlabError:
            raise
        except Exception:  # user code of any kind that needs real tensors
            return None
        builds.append(shapes(target_of(model, state).state_dict()))
    return builds
