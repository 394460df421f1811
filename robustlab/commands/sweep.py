"""`robustlab sweep`: accuracy against eps or steps for several models, as CSV/JSON and a plot."""
from __future__ import annotations

import argparse

from .attack_args import add_attack_settings, add_model_args, check_used, settings_for
from .common import add_data_args, add_runtime_args

NAME = "sweep"
ORDER = 30
HELP = "accuracy against attack strength (eps or steps) for one or more models, with a plot"


def named(text: str) -> tuple[str, str]:
    """NAME=CKPT (or just CKPT, named after its run directory)."""
    if "=" in text:
        name, path = text.split("=", 1)
        return name, path
    from pathlib import Path

    p = Path(text)
    return (p.parent.name or p.stem), text


def parse_values(text: str) -> list[float | int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(int(part) if part.isdigit() else float(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--values expects numbers like 0,0.02,0.05, got {part!r}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True, type=named, metavar="[NAME=]CKPT",
                   help="a model to sweep (repeatable)")
    add_data_args(p, split=True)
    p.add_argument("--attack", default="pgd", help="attack name")
    p.add_argument("--threat", default="white-box", help="threat model")
    p.add_argument("--param", default="eps", choices=["eps", "steps"], help="the swept setting")
    p.add_argument("--values", type=parse_values, required=True, help="comma-separated values")
    add_attack_settings(p)
    add_model_args(p)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    add_runtime_args(p)
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.csv/.json/.png")
    p.add_argument("--title", default="")


def run(args: argparse.Namespace) -> int:
    from .. import attacks as rl_attacks
    from .. import data as rl_data
    from .. import models as rl_models
    from ..errors import ConfigError
    from ..evaluation import save_sweep, sweep
    from ..evaluation.sanity import monotonic_warnings
    from ..purifiers import Purified
    from ..training.trainer import resolve_device

    if getattr(args, args.param) is not None:
        raise ConfigError(f"--{args.param} is the swept setting; give its values with --values")
    used: set[str] = set()
    settings = settings_for(args.attack, args, used)
    check_used(args, [args.attack], used)
    models = {}
    for name, path in args.model:
        if name in models:
            raise ConfigError(f"two models are named {name!r}; use NAME=CKPT")
        m = rl_models.load(path)
        models[name] = Purified(rl_models.load(args.purifier), m) if args.purifier else m
    first = next(iter(models.values()))
    dataset = args.dataset or getattr(getattr(first, "classifier", first), "robustlab_meta",
                                      {}).get("meta", {}).get("dataset")
    if not dataset:
        raise ConfigError("--dataset is required (the checkpoint does not record one)")
    ds = rl_data.load(dataset, args.split, root=args.data_root)
    source = rl_models.load(args.source) if args.source else None
    extractor = None
    if rl_attacks.ATTACKS.get(args.attack).model_role == "extractor":
        base = rl_models.load(args.extractor) if args.extractor else getattr(first, "classifier", first)
        extractor = rl_models.feature_extractor(base, args.extractor_blocks)
    rows = sweep(models, ds, args.attack, param=args.param, values=args.values, settings=settings,
                 threat=args.threat, n=args.n, seed=args.seed, batch_size=args.batch_size,
                 device=resolve_device(args.device), progress=not args.no_progress,
                 source=source, extractor=extractor)
    paths = save_sweep(rows, args.out, title=args.title)
    print(markdown(rows))
    for w in monotonic_warnings(rows):
        print(f"robustlab: warning [{w['check']}]: {w['message']}")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def markdown(rows: list[dict]) -> str:
    """Models as rows, swept values as columns, accuracy in %."""
    values = sorted({r["value"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    acc = {(r["model"], r["value"]): r["acc"] for r in rows}
    param = rows[0]["param"] if rows else ""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = [f"| model | " + " | ".join(f"{param}={fmt(v)}" for v in values) + " |",
             "|---" * (len(values) + 1) + "|"]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(f"{100 * acc[(m, v)]:.2f}" for v in values) + " |")
    return "\n".join(lines)
