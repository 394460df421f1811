"""`robustlab sweep`: accuracy against eps or steps for several models, as CSV/JSON and a plot."""
from __future__ import annotations

import argparse

from .attack_args import (add_attack_settings, add_model_args, check_used, load_checked,
                          settings_for)
from .common import (add_data_args, add_model_source_args, add_runtime_args, add_speed_args,
                     check_amp_flag, data_load_args, numbers)
from .evaluate import check_counts, dataset_of, speed_options

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True, type=named, metavar="[NAME=]CKPT",
                   help="a model to sweep (repeatable): a checkpoint, or what evaluate's --model "
                   "takes, built with the model flags below")
    add_model_source_args(p)
    add_data_args(p, split=True)
    p.add_argument("--attack", action="append", default=None,
                   help="attack name, repeatable (default: pgd); one curve per model and attack")
    p.add_argument("--threat", default="white-box", help="threat model")
    p.add_argument("--param", default="eps", choices=["eps", "steps"], help="the swept setting")
    p.add_argument("--values", type=numbers, required=True, help="comma-separated values")
    add_attack_settings(p)
    add_model_args(p)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    add_runtime_args(p)
    add_speed_args(p)
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.csv/.json/.png")
    p.add_argument("--title", default="")


def run(args: argparse.Namespace) -> int:
    from .. import data as rl_data
    from ..distributed import world
    from ..evaluation import save_sweep, sweep
    from ..evaluation.sanity import monotonic_warnings
    from ..runtime import resolve_device
    from .outputs import Outputs

    attacks, settings = _checked_settings(args)
    models = _load_models(args)
    first = next(iter(models.values()))
    dataset = dataset_of(args.dataset, first)
    for m in list(models.values())[1:]:  # each model trained elsewhere is worth a warning
        dataset_of(dataset, m)
    source = load_checked("--source", args.source, "classifier", args) if args.source else None
    extractor = _extractor(args, attacks, first)
    with Outputs(prefix=args.out) as outputs:
        ds = rl_data.load(dataset, args.split, root=args.data_root,
                          **data_load_args(args, dataset, first))
        rows = sweep(models, ds, attacks, param=args.param, values=args.values,
                     attack_settings=settings, threat=args.threat, n=args.n, seed=args.seed,
                     batch_size=args.batch_size, device=resolve_device(args.device),
                     progress=not args.no_progress, source=source, extractor=extractor,
                     **speed_options(args))
        if not world().main:  # under torchrun only rank 0 writes and prints
            return 0
        paths: dict = {}
        outputs.write(lambda: paths.update(save_sweep(rows, args.out, title=args.title)),
                      keep={"rows": rows})
    for metric, caption in CAPTIONS.items():
        print(f"{caption}\n{markdown(rows, metric)}")
    for w in monotonic_warnings(rows):
        print(f"robustlab: warning [{w['check']}]: {w['message']}")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _checked_settings(args: argparse.Namespace) -> tuple[list[str], dict[str, dict]]:
    """(the attacks, each one's settings from the flags), every flag checked before anything is
    loaded."""
    from ..errors import ConfigError
    from ..evaluation.sweeps import sweep_specs
    from ..evaluation.threats import THREAT_MODELS

    if getattr(args, args.param) is not None:
        raise ConfigError(f"--{args.param} is the swept setting; give its values with --values")
    check_counts(args)
    check_amp_flag(args.amp, args.device)
    check_values(args.param, args.values, args.norm or "linf")
    THREAT_MODELS.get(args.threat)
    attacks = args.attack or ["pgd"]
    used: set[str] = set()
    settings = {a: settings_for(a, args, used) for a in attacks}
    check_used(args, attacks, used)
    sweep_specs(attacks, args.param, args.values, attack_settings=settings, threat=args.threat)
    return attacks, settings


def _load_models(args: argparse.Namespace) -> dict:
    """name -> model from the --model flags (each Purified by --purifier when given)."""
    from ..errors import ConfigError
    from ..purifiers import Purified

    purifier = load_checked("--purifier", args.purifier, "purifier", args) if args.purifier \
        else None
    models = {}
    for name, path in args.model:
        if name in models:
            raise ConfigError(f"two models are named {name!r}; use NAME=CKPT")
        m = load_checked("--model", path, "classifier", args)
        models[name] = Purified(purifier, m) if purifier is not None else m
    return models


def _extractor(args: argparse.Namespace, attacks: list[str], first):
    """The feature extractor an extractor attack needs (--extractor, else the first model's
    classifier), or None."""
    from .. import attacks as rl_attacks
    from .. import models as rl_models

    if not any(rl_attacks.ATTACKS.get(a).model_role == "extractor" for a in attacks):
        return None
    base = (load_checked("--extractor", args.extractor, "classifier", args) if args.extractor
            else getattr(first, "classifier", first))
    return rl_models.feature_extractor(base, args.extractor_blocks)


def check_values(param: str, values: list, norm: str = "linf", flag: str = "--values") -> None:
    """Swept values obey the rules of their setting: eps the one eps rule, steps integers >= 1."""
    from .._checks import check_eps, check_int

    name = f"{flag} ({param})" if flag == "--values" else flag
    for v in values:
        if param == "eps":
            check_eps(v, norm, name=name)
        else:
            check_int(name, v)


CAPTIONS = {"acc": "robust accuracy (%): right on the clean and on the attacked input",
            "perturbed_acc": "perturbed accuracy (%): right on the attacked input (the reports' "
                             "metric)"}


def markdown(rows: list[dict], metric: str = "acc") -> str:
    """Models (and attacks) as rows, swept values as columns, ``metric`` in % (``acc``: robust
    accuracy; ``perturbed_acc``: accuracy on the attacked inputs)."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    values = sorted({r["value"] for r in rows})
    several = len({r["attack"] for r in rows}) > 1
    keys = list(dict.fromkeys((r["model"], r["attack"]) for r in rows))
    acc = {(r["model"], r["attack"], r["value"]): r[metric] for r in rows}
    param = rows[0]["param"] if rows else ""
    lines = ["| model | " + " | ".join(f"{param}={fmt(v)}" for v in values) + " |",
             "|---" * (len(values) + 1) + "|"]
    for m, a in keys:
        label = f"{m} ({a})" if several else m
        lines.append(f"| {label} | " + " | ".join(f"{100 * acc[(m, a, v)]:.2f}" for v in values)
                     + " |")
    return "\n".join(lines)
