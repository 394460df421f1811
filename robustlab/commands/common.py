"""Argument helpers shared by sub-commands."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import parse_value
from ..errors import ConfigError


def size(text: str) -> int | float:
    """A count ("20000") or a fraction ("0.3")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None
    return int(value) if value.is_integer() and "." not in text else value


def add_data_args(p: argparse.ArgumentParser, split: bool = False) -> None:
    p.add_argument("--dataset", help="dataset name (see `robustlab list datasets`)")
    p.add_argument("--data-root", default=None,
                   help="directory holding the dataset files (default: system location, then download)")
    if split:
        p.add_argument("--split", default="test", choices=["train", "test"])


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    return data


def apply_sets(cfg: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    """Apply ``key=value`` / ``a.b=value`` overrides (values parsed as YAML)."""
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        target = cfg
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key}: {part} is not a mapping")
        target[parts[-1]] = parse_value(text)
    return cfg
