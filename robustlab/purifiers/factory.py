"""Build purifiers and critics by registry name, tagged with the spec a checkpoint loader needs."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from ..models.factory import attach_spec
from ..models.kinds import register_kind
from ._layers import min_map_input
from ._registries import CRITICS, PURIFIERS


def _resolve(kind: str, name: str, factory: Callable[..., nn.Module], kwargs: dict[str, Any]) -> dict:
    """All keyword arguments the factory will see, defaults filled in; unknown ones are errors."""
    sig = inspect.signature(factory)
    try:
        bound = sig.bind(**kwargs)
    except TypeError:
        known = ", ".join(p for p in sig.parameters if p != "self")
        unknown = ", ".join(sorted(k for k in kwargs if k not in sig.parameters))
        raise ConfigError(f"{kind} {name!r} does not take {unknown or 'these arguments'}; "
                          f"it takes: {known}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def _create(kind: str, registry, name: str, kwargs: dict[str, Any]) -> nn.Module:
    factory = registry.get(name)  # UnknownNameError lists the known names
    # The factory validates its arguments (ConfigError), so a loader calling it directly does too.
    resolved = _resolve(kind, name, factory, kwargs)
    return attach_spec(factory(**resolved), kind, name, resolved)


def create_purifier(name: str, in_channels: int = 3, *, width: float = 1.0, **kw: Any) -> nn.Module:
    """Build the purifier ``name`` (see ``PURIFIERS.names()``): [0,1] images -> [0,1] images.

    Args:
        name: registry name ("unet-a", "unet-b", "nrp").
        in_channels: image channels.
        width: channel multiplier (1.0 = the published sizes; CPU presets use 0.25).
        **kw: architecture-specific settings (e.g. ``n_blocks`` for "nrp", ``dropout`` for U-Nets).

    Returns:
        The module, with ``robustlab_spec = {"kind": "purifier", "name", "kwargs"}`` holding every
        resolved argument, so a checkpoint can rebuild it from the registry.

    Raises:
        UnknownNameError for an unknown name; ConfigError for a bad or unknown argument.
    """
    return _create("purifier", PURIFIERS, name, dict(in_channels=in_channels, width=width, **kw))


def create_critic(name: str, in_channels: int = 3, *, width: float = 1.0, image_size: int = 32,
                  **kw: Any) -> nn.Module:
    """Build the critic ``name`` (see ``CRITICS.names()``): (x_cond, x_other) -> (B, 1, h, w) logits.

    Args:
        name: registry name ("patchgan-a", "patchgan-b").
        in_channels: channels of each image (the critic sees the pair concatenated).
        width: channel multiplier.
        image_size: side of the training images; refused (ConfigError naming the smallest size
            that works) when the patch map would be empty.
        **kw: architecture-specific settings (e.g. ``dropout`` for "patchgan-b").

    Returns:
        The module, with ``robustlab_spec = {"kind": "critic", "name", "kwargs"}``.
    """
    kwargs = dict(in_channels=in_channels, width=width, image_size=image_size, **kw)
    return _create("critic", CRITICS, name, kwargs)


def size_multiple(arch: str) -> int:
    """The purifier ``arch`` takes square images whose side is a multiple of this."""
    return int(getattr(PURIFIERS.get(arch), "size_multiple", 1))


def critic_min_size(critic: str) -> int:
    """The smallest image side for which the critic's patch map is not empty."""
    geometry = getattr(CRITICS.get(critic), "geometry", None)
    return min_map_input(geometry) if geometry else 1


def working_sizes(arch: str, critic: str, count: int = 4) -> list[int]:
    """The ``count`` smallest square image sizes that both ``arch`` and ``critic`` accept."""
    multiple, smallest = size_multiple(arch), critic_min_size(critic)
    first = -(-smallest // multiple) * multiple
    return [first + i * multiple for i in range(count)]


def _rebuild(kind: str, registry) -> Callable[..., nn.Module]:
    """How a checkpoint of ``kind`` is rebuilt: the factory with the sidecar's arguments."""
    def build(name: str, **kwargs: Any) -> nn.Module:
        return _create(kind, registry, name, kwargs)
    return build


register_kind("purifier", PURIFIERS, _rebuild("purifier", PURIFIERS), hint="pass it as --purifier")
register_kind("critic", CRITICS, _rebuild("critic", CRITICS),
              hint="a critic only serves while training a purifier; pass that run's "
                   "purifier.safetensors as --purifier")
