"""The kinds of module a checkpoint can hold, and how each is rebuilt from its registry.

The checkpoint loader looks a sidecar's ``kind`` up here and never names the packages that define
the kinds: ``robustlab.models`` registers "classifier", ``robustlab.purifiers`` registers
"purifier" and "critic" when it is imported. A kind not registered yet makes the loader import the
packages the top-level ``robustlab`` package lists as defining kinds (``robustlab.KIND_PACKAGES``)
once, so that ``robustlab.models.load`` of a purifier works before ``robustlab.purifiers`` was
imported.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..registry import Registry


@dataclass(frozen=True)
class ModuleKind:
    """A kind of module: its architectures by name, how to build one, and how commands take it."""

    architectures: Registry                    # name -> factory
    build: Callable[..., nn.Module]            # (name, **kwargs) -> module with its spec attached
    hint: str                                  # what to do with such a checkpoint


MODULE_KINDS: Registry[ModuleKind] = Registry("module kind")


def register_kind(name: str, architectures: Registry, build: Callable[..., nn.Module], *,
                  hint: str) -> None:
    """Make checkpoints of kind ``name`` loadable: ``build(arch, **kwargs)`` rebuilds one."""
    MODULE_KINDS.register(name, help=hint)(ModuleKind(architectures, build, hint))


def module_kind(name: str) -> ModuleKind:
    """The registered kind ``name``; UnknownNameError lists the known kinds."""
    if name not in MODULE_KINDS:
        _import_kind_packages()
    return MODULE_KINDS.get(name)


def kind_names() -> list[str]:
    """Every kind, in the order registered (classifier first)."""
    _import_kind_packages()
    return MODULE_KINDS.names(registered_order=True)


def _import_kind_packages() -> None:
    root = importlib.import_module(__name__.split(".")[0])
    for package in getattr(root, "KIND_PACKAGES", ()):
        importlib.import_module(f"{root.__name__}.{package}")

