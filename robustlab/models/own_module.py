"""A module of your own, made savable: :func:`from_module` (what ``save(model, path,
source="python:MODULE:FACTORY")`` calls) gives it a spec naming the function that rebuilds it,
checked now by rebuilding it, so that the checkpoint loads back (``load(path, trust_code=True)``).
"""
from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, RobustlabError
from .external import SourceClassifier, first_conv, trusting
from .factory import MODELS, SOURCE_FORMS, create
from .weights import fit_problems, shapes


def from_module(model: nn.Module, source: str, *, num_classes: int | None = None,
                in_channels: int | None = None, input_size: int | None = None,
                args: dict | None = None) -> nn.Module:
    """Make a module of your own savable: a classifier with a spec naming ``source``, the
    function (``python:MODULE:FACTORY``, or ``torchvision:``/``timm:`` NAME) that rebuilds it.

    The spec is checked now, by building ``source`` on the meta device and comparing its
    tensors with ``model``'s, so the file :func:`~robustlab.models.save` writes loads back (with
    ``trust_code=True`` for ``python:``). A :class:`SourceClassifier` keeps its normalisation
    and input size; any other module is wrapped with none.

    Args:
        model: maps [0, 1] images to logits (or a ``with_normalization`` wrapper).
        source: how to rebuild it; ``args``: the keyword arguments ``source`` is called with.
        num_classes, in_channels: default from ``model``'s attributes, its first convolution
            and one forward pass.

    Returns:
        A :class:`SourceClassifier` sharing ``model``'s parameters, with ``robustlab_spec``.
    """
    if MODELS.source_of(source) is None:
        raise ConfigError(f"source must name the function that rebuilds the model, one of "
                          f"{SOURCE_FORMS}; got {source!r}")
    wrapped = model if isinstance(model, SourceClassifier) else None
    net = wrapped.net if wrapped is not None else model
    c = in_channels or getattr(wrapped or model, "in_channels", None)
    c = c if isinstance(c, int) else (getattr(first_conv(net), "in_channels", None) or 3)
    size = input_size or (wrapped.input_size if wrapped is not None else None)
    k = num_classes or getattr(wrapped or model, "num_classes", None) or _probe(model, c, size)
    mean = wrapped.normalize.mean.flatten().tolist() if wrapped is not None else [0.0] * c
    std = wrapped.normalize.std.flatten().tolist() if wrapped is not None else [1.0] * c
    rebuilt = _rebuild(source, k, c, dict(mean=mean, std=std, input_size=size, args=args))
    out = SourceClassifier(net, num_classes=k, in_channels=c, mean=mean, std=std,
                           input_size=size, label=source)
    first = next(net.parameters(), None)
    if first is not None:
        out.normalize.to(first.device)
    _check_rebuilds(out, rebuilt, source)
    out.robustlab_spec = json.loads(json.dumps(rebuilt.robustlab_spec))
    return out


def _rebuild(source: str, k: int, c: int, kw: dict[str, Any]) -> nn.Module:
    """What ``source`` builds, on the meta device (on the CPU for code that cannot run there);
    the caller names their own code here, so it is trusted."""
    with trusting(True):
        try:
            with torch.device("meta"):
                return create(source, k, c, **kw)
        except RobustlabError:
            raise
        except Exception:  # user code of any kind that needs real tensors
            return create(source, k, c, **kw)


def _probe(model: nn.Module, channels: int, size: int | None) -> int:
    side = size or 32
    was = model.training
    try:
        with torch.no_grad():
            return int(model.eval()(torch.zeros(1, channels, side, side)).shape[-1])
    except Exception as exc:  # the user's module, any error: say what to pass instead
        raise ConfigError(f"cannot tell how many classes {type(model).__name__} predicts (a "
                          f"(1, {channels}, {side}, {side}) forward pass failed: {exc}); pass "
                          "num_classes= and input_size=") from None
    finally:
        model.train(was)


def _check_rebuilds(model: nn.Module, rebuilt: nn.Module, source: str) -> None:
    problems = fit_problems(shapes(rebuilt.state_dict()), shapes(model.state_dict()))
    if problems:
        raise ConfigError(f"{source} does not rebuild this model ({problems}, 'file' being the "
                          "model and 'model' what the source builds); pass the args it needs")
