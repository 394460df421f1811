"""`robustlab stress`: the traffic-sign report's stress tests for several trained models.

Accuracy against eps under FGSM and under PGD, and against the number of PGD steps at a fixed eps,
one figure per attack with a line per model, plus the clean-accuracy table (the report's Table I).
Writes into --out: ``fgsm-eps``, ``pgd-eps`` and ``pgd-steps`` (each .csv/.json/.png),
``clean.csv``/``clean.md``, and ``stress.json`` (everything, with the settings and provenance).
"""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

from .common import (add_data_args, add_model_source_args, add_runtime_args, add_speed_args,
                     check_amp_flag, data_load_args, numbers)

NAME = "stress"
ORDER = 35
HELP = ("stress tests of several models: accuracy vs eps (FGSM, PGD) and vs PGD steps, one "
        "figure per attack, and the clean-accuracy table")


def integers(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,5,10,20, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .sweep import named

    p.add_argument("--model", action="append", required=True, type=named, metavar="[NAME=]CKPT",
                   help="a trained classifier (repeatable); NAME labels its line and table row")
    add_model_source_args(p)
    add_data_args(p, split=True)
    p.add_argument("--eps", type=numbers, default=numbers("0,2/255,4/255,8/255,12/255,16/255"),
                   help="eps values of the FGSM and PGD curves (0 is clean accuracy)")
    p.add_argument("--pgd-steps", type=int, default=20, help="PGD steps of the eps curve")
    p.add_argument("--steps", type=integers, default=integers("1,2,5,10,20,50"),
                   help="PGD steps of the steps curve")
    p.add_argument("--steps-eps", type=numbers, default=numbers("8/255"),
                   help="eps of the steps curve (one value)")
    p.add_argument("--n", type=int, default=1000, help="test images (the first N of the split)")
    p.add_argument("--batch-size", type=int, default=256)
    add_runtime_args(p)
    add_speed_args(p)
    p.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    from ..distributed import world
    from ..runtime import resolve_device
    from .outputs import Outputs
    from .evaluate import speed_options
    from .sweep import markdown

    _check_flags(args)
    models, info = _load_models(args.model, args)
    dataset = _dataset_name(args, models)
    common = dict(n=args.n, seed=args.seed, batch_size=args.batch_size,
                  device=resolve_device(args.device), progress=not args.no_progress,
                  **speed_options(args))
    out = Path(args.out)
    with Outputs(dir=args.out) as outputs:
        ds = _load(dataset, args, next(iter(models.values())))
        curves = _measure(args, models, info, ds, common)
        if not world().main:  # under torchrun only rank 0 writes and prints
            return 0
        titles = _titles(args)
        table = clean_table(info)
        doc = _document(args, ds, info, curves)
        outputs.write(lambda: _write(out, curves, titles, table, info, doc), keep=doc)
    print(table)
    for key, rows in curves.items():
        print(f"\n{titles[key]}\n{markdown(rows)}")
    print(f"\nwrote {out}/: clean.md, clean.csv, stress.json, "
          + ", ".join(f"{k}.csv/.json/.png" for k in curves))
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    """Every numeric flag, before any checkpoint or data is read."""
    from ..errors import ConfigError
    from .sweep import check_values

    if len(args.steps_eps) != 1 or args.steps_eps[0] <= 0:
        raise ConfigError(f"--steps-eps takes one eps > 0, got {args.steps_eps}")
    check_values("eps", args.eps, flag="--eps")
    check_values("eps", args.steps_eps, flag="--steps-eps")
    check_values("steps", args.steps, flag="--steps")
    if args.n < 1 or args.pgd_steps < 1 or args.batch_size < 1:
        raise ConfigError("--n, --pgd-steps and --batch-size must be >= 1")
    check_amp_flag(args.amp, args.device)


def _measure(args: argparse.Namespace, models: dict, info: dict, ds, common: dict) -> dict:
    """Each model's clean accuracy (into ``info``) and the three curves: FGSM and PGD against
    eps, PGD against steps."""
    from ..evaluation import evaluate, sweep

    for name, model in models.items():
        info[name]["clean_acc"] = evaluate(model, ds, (), **common).clean_acc
    return {
        "fgsm-eps": sweep(models, ds, "fgsm", param="eps", values=args.eps, **common),
        "pgd-eps": sweep(models, ds, "pgd", param="eps", values=args.eps,
                         settings={"steps": args.pgd_steps}, **common),
        "pgd-steps": sweep(models, ds, "pgd", param="steps", values=args.steps,
                           settings={"eps": args.steps_eps[0]}, **common),
    }


def _titles(args: argparse.Namespace) -> dict[str, str]:
    return {"fgsm-eps": "FGSM: accuracy vs eps",
            "pgd-eps": f"PGD-{args.pgd_steps}: accuracy vs eps",
            "pgd-steps": f"PGD at eps {args.steps_eps[0]:.4g}: accuracy vs steps"}


def _document(args: argparse.Namespace, ds, info: dict, curves: dict) -> dict:
    """stress.json: everything measured, with the settings and provenance."""
    from .._io import provenance

    return {"dataset": ds.name, "split": args.split, "n": min(args.n, len(ds)),
            "seed": args.seed, "models": info, "curves": curves, "provenance": provenance(),
            "settings": {"eps": args.eps, "pgd_steps": args.pgd_steps, "steps": args.steps,
                         "steps_eps": args.steps_eps[0]}}


def _write(out: Path, curves: dict, titles: dict, table: str, info: dict, doc: dict) -> None:
    """Every file of --out (called inside one file group: all appear or none does)."""
    from .._io import write_json, write_text
    from ..evaluation import save_sweep

    doc["files"] = {key: {k: str(v) for k, v in
                          save_sweep(rows, out / key, title=titles[key]).items()}
                    for key, rows in curves.items()}
    write_text(out / "clean.md", table + "\n")
    write_text(out / "clean.csv", _csv(info))
    write_json(out / "stress.json", doc)


def _load_models(named: list[tuple[str, str]], args: argparse.Namespace | None = None
                 ) -> tuple[dict, dict[str, dict[str, Any]]]:
    """name -> model, and name -> what the table shows (checkpoint, method, training eps)."""
    from ..errors import ConfigError
    from .attack_args import load_checked

    models, info = {}, {}
    for name, path in named:
        if name in models:
            raise ConfigError(f"two models are named {name!r}; use NAME=CKPT")
        models[name] = load_checked("--model", path, "classifier", args)
        cfg = getattr(models[name], "robustlab_meta", {}).get("meta", {}).get("config", {}) or {}
        info[name] = {"checkpoint": str(path), "method": cfg.get("method", "?"),
                      "train_eps": _train_eps(cfg), "dataset": cfg.get("dataset")}
    return models, info


def _train_eps(cfg: dict[str, Any]) -> float | None:
    """The eps the model was trained at (the method's default when not given), if any."""
    from ..config import from_dict
    from ..errors import RobustlabError
    from ..training import METHODS

    try:
        args = from_dict(METHODS.get(cfg.get("method", "")).Args, cfg.get("method_args") or {})
    except RobustlabError:
        return None
    return getattr(args, "eps", None)


def _dataset_name(args: argparse.Namespace, models: dict) -> str:
    from ..data import DATASETS
    from ..errors import ConfigError

    recorded = {i.get("meta", {}).get("dataset") for i in
                (getattr(m, "robustlab_meta", {}) for m in models.values())} - {None}
    dataset = args.dataset or (recorded.pop() if len(recorded) == 1 else None)
    if not dataset:
        raise ConfigError("--dataset is required (the checkpoints do not record one dataset)")
    DATASETS.get(dataset)
    from .evaluate import dataset_of

    for m in models.values():  # each model trained on another dataset is worth a warning
        dataset_of(dataset, m)
    return dataset


def _load(dataset: str, args: argparse.Namespace, model):
    from .. import data as rl_data

    return rl_data.load(dataset, args.split, root=args.data_root,
                        **data_load_args(args, dataset, model))


def clean_table(info: dict[str, dict[str, Any]]) -> str:
    """The report's Table I: clean accuracy per model, with how it was trained."""
    lines = ["| model | method | train eps | clean acc (%) |", "|---|---|---|---|"]
    for name, i in info.items():
        eps = "-" if i["train_eps"] is None else f"{i['train_eps']:.4g}"
        lines.append(f"| {name} | {i['method']} | {eps} | {100 * i['clean_acc']:.2f} |")
    return "\n".join(lines)


def _csv(info: dict[str, dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "method", "train_eps", "clean_acc", "checkpoint"])
    for name, i in info.items():
        w.writerow([name, i["method"], i["train_eps"], i["clean_acc"], i["checkpoint"]])
    return buf.getvalue()
