"""The classifier registry, ``create`` (validated construction) and ``attach_spec``.

Every classifier factory registered in :data:`MODELS` takes
``(num_classes, in_channels, width, mean, std, **its own options)`` with ``mean``/``std`` already
resolved to one value per channel, and returns an ``nn.Module`` that maps (B, C, H, W) images in
[0, 1] to (B, num_classes) logits. Besides its registered names, :data:`MODELS` reaches networks
from elsewhere by prefix (``torchvision:NAME``, ``timm:NAME``, ``python:MODULE:FACTORY``; see
``prefixes.py``), so ``create``, the checkpoints and the trainers take them like any other name.
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Sequence, TypeVar

from torch import nn

from .._checks import check_int, check_positive
from ..errors import ConfigError, UnknownNameError
from ..registry import Registry
from .normalize import resolve_stats

SOURCE_FORMS = "torchvision:NAME, timm:NAME or python:MODULE:FACTORY"


class ModelRegistry(Registry):
    """The classifier registry, which also resolves ``PREFIX:REST`` names through the sources
    registered with :meth:`register_source` (a resolver ``REST -> factory``, called on ``get``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self._sources: dict[str, Callable[[str], Callable[..., nn.Module]]] = {}

    def register_source(self, prefix: str, resolver: Callable[[str], Callable[..., nn.Module]]
                        ) -> None:
        """Make ``PREFIX:REST`` names resolve to ``resolver(REST)``."""
        if prefix in self._sources:
            raise ValueError(f"model source {prefix!r} is registered twice")
        self._sources[prefix] = resolver

    def source_of(self, name: object) -> str | None:
        """The registered prefix of ``name`` (``"torchvision"`` for ``torchvision:resnet18``)."""
        if not isinstance(name, str) or ":" not in name:
            return None
        prefix = name.split(":", 1)[0]
        return prefix if prefix in self._sources else None

    def get(self, name: str) -> Callable[..., nn.Module]:
        prefix = self.source_of(name)
        if prefix is None:
            return super().get(name)
        rest = name[len(prefix) + 1:]
        if not rest:
            raise UnknownNameError(f"model {name!r} names no network; write {prefix}:NAME")
        return self._sources[prefix](rest)

    def __contains__(self, name: object) -> bool:
        prefix = self.source_of(name)
        if prefix is not None:
            return len(str(name)) > len(prefix) + 1
        return super().__contains__(name)

    def unknown_message(self, name: str) -> str:
        return (f"{super().unknown_message(name)}; or a network from elsewhere: "
                f"{SOURCE_FORMS}")


MODELS: ModelRegistry = ModelRegistry("model")

M = TypeVar("M", bound=nn.Module)
_COMMON = ("num_classes", "in_channels", "width", "mean", "std")
DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.5


def scaled(channels: int, width: float) -> int:
    """Channel count for a width multiplier: ``max(1, round(channels * width))``."""
    return max(1, round(channels * width))


def attach_spec(module: M, kind: str, name: str, kwargs: dict[str, Any], *,
                code: str | None = None) -> M:
    """Record how ``module`` was built, so that a checkpoint can rebuild it from a registry.

    Stores ``module.robustlab_spec = {"kind": kind, "name": name, "kwargs": kwargs}``. ``kind`` is
    ``"classifier"``, ``"purifier"`` or ``"critic"``; ``kwargs`` must be JSON-serialisable (it is
    stored as a JSON round-trip copy, so tuples become lists). ``name`` must be registered for the
    loader to rebuild it: registered by code outside robustlab, ``code`` names the importable
    module that registers it (added to the spec; loading then needs ``trust_code=True``, because
    it imports that module). A module of your own that no registry builds is saved with
    ``robustlab.models.save(model, path, source="python:MODULE:FACTORY")`` instead. Returns
    ``module``.
    """
    if not isinstance(kind, str) or not kind or not isinstance(name, str) or not name:
        raise ConfigError(f"attach_spec needs a non-empty kind and name, got {kind!r}, {name!r}")
    if not isinstance(kwargs, dict):
        raise ConfigError(f"attach_spec needs kwargs as a dict, got {type(kwargs).__name__}")
    try:
        stored = json.loads(json.dumps(kwargs, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the arguments of {kind} {name!r} must be plain JSON values (numbers, "
                          f"strings, lists, dicts) to be saved in a checkpoint: {exc}") from None
    module.robustlab_spec = {"kind": kind, "name": name, "kwargs": stored}
    if code is not None:
        module.robustlab_spec["code"] = code
    return module


def _options(factory: Callable[..., nn.Module]) -> dict[str, Any]:
    """The architecture-specific keyword arguments of a factory and their defaults."""
    params = inspect.signature(factory).parameters
    return {k: p.default for k, p in params.items()
            if k not in _COMMON and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def create(name: str, num_classes: int = 10, in_channels: int = 3, *, width: float = 1.0,
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
           trust_code: bool = False, **kw: Any) -> nn.Module:
    """Build the classifier registered as ``name``.

    Args:
        name: a key of :data:`MODELS` (``robustlab list models``), or a network from elsewhere:
            ``torchvision:NAME``, ``timm:NAME`` (the optional timm package) or
            ``python:MODULE:FACTORY`` (your own code; needs ``trust_code=True``).
        num_classes: number of logits (>= 2).
        in_channels: image channels (>= 1).
        width: channel multiplier, ``channels = max(1, round(c * width))``; 1.0 is the paper size.
        mean, std: per-channel normalisation applied inside the model (default 0.5 / 0.5, none
            for networks from elsewhere; a single value is repeated to every channel).
        trust_code: allow ``python:`` names, which import and run that module.
        **kw: architecture-specific options (e.g. ``pretrained`` for ``resnet18-imagenet``;
            ``input_size`` and ``args`` for networks from elsewhere).

    Returns:
        An ``nn.Module`` mapping (B, in_channels, H, W) images in [0, 1] to (B, num_classes) logits,
        carrying ``robustlab_spec`` (see :func:`attach_spec`) with every resolved argument.
    """
    from .external import trusting

    with trusting(trust_code):
        factory = MODELS.get(name)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    in_channels = check_int("in_channels", in_channels, minimum=1)
    width = check_positive("width", width)
    default_mean, default_std = getattr(factory, "default_stats", (DEFAULT_MEAN, DEFAULT_STD))
    mean_l = resolve_stats("mean", mean, in_channels, default_mean)
    std_l = resolve_stats("std", std, in_channels, default_std)
    if not all(s > 0 for s in std_l):
        raise ConfigError(f"std must be > 0 for every channel, got {std_l}")
    options = _options(factory)
    unknown = sorted(set(kw) - set(options))
    if unknown:
        accepted = ", ".join(sorted(options)) or "none"
        raise ConfigError(f"model {name!r} does not take {', '.join(map(repr, unknown))}; "
                          f"its own options are: {accepted} (plus {', '.join(_COMMON)})")
    missing = sorted(k for k, v in options.items() if v is inspect.Parameter.empty and k not in kw)
    if missing:
        raise ConfigError(f"model {name!r} needs the option(s) {', '.join(map(repr, missing))}")
    resolved = {**options, **kw}
    model = factory(num_classes=num_classes, in_channels=in_channels, width=width,
                    mean=mean_l, std=std_l, **resolved)
    kwargs = {"num_classes": num_classes, "in_channels": in_channels, "width": width,
              "mean": mean_l, "std": std_l, **resolved}
    return attach_spec(model, "classifier", name, kwargs, code=code_module(factory))


def code_module(factory: Callable[..., nn.Module]) -> str | None:
    """The module of user code a checkpoint of ``factory``'s models needs imported (None for
    robustlab's own architectures): the loader imports it only when trusted to."""
    code = getattr(factory, "code_module", None)
    if code is not None:
        return code
    module = getattr(factory, "__module__", None) or ""
    root = __name__.split(".")[0]
    return None if module == root or module.startswith(root + ".") else module
