"""Argument helpers shared by sub-commands."""
from __future__ import annotations

import argparse
from typing import Any

from ..config import parse_value, read_yaml_mapping
from ..errors import ConfigError


def size(text: str) -> int | float:
    """A count ("20000") or a fraction ("0.3")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None
    return int(value) if value.is_integer() and "." not in text else value


def number(text: str) -> float:
    """A number, also written as a fraction of 255 ("8/255") as the papers do."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.031 or 8/255, got "
                                         f"{text!r}") from None


def numbers(text: str) -> list[float | int]:
    """Comma-separated numbers ("0,2/255,8/255"); whole numbers stay integers (steps)."""
    out: list[float | int] = []
    for part in text.split(","):
        part = part.strip()
        out.append(int(part) if part.isdigit() else number(part))
    return out


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
    """The settings in --config (empty without one)."""
    return read_yaml_mapping(path) if path else {}


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


def add_optim_args(p: argparse.ArgumentParser) -> None:
    """Optimiser and learning-rate schedule flags (fields of TrainConfig and PretrainConfig)."""
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["cosine", "step", "constant"])
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--grad-clip", type=float)


def add_run_args(p: argparse.ArgumentParser, set_example: str) -> None:
    """The flags every training command shares: --set, runtime, --out, --resume, --overwrite."""
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override any setting, e.g. --set {set_example} (repeatable)")
    add_runtime_args(p)
    p.set_defaults(seed=None)  # the config's seed unless --seed is given
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")


def config_from_args(args: argparse.Namespace, fields: tuple[str, ...], required: tuple[str, ...],
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """--config YAML, then the flags that were given (``fields``: flags named as their settings),
    then ``extra`` (already merged settings), then --set; refuses a missing required setting."""
    cfg = load_yaml(args.config)
    for name in fields:
        value = getattr(args, name, None)
        if value is not None:
            cfg[name] = value
    for key, value in (extra or {}).items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    cfg = apply_sets(cfg, args.set)
    for name in required:
        if name not in cfg:
            raise ConfigError(f"--{name.replace('_', '-')} is required (or give it in --config)")
    return cfg
