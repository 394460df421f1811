"""`robustlab score`: a matrix of saved adversarial examples (rows) scored on models (columns),
e.g. the SSR report's Table 1: feature-distortion examples from VGG16/VGG19 on VGG16, VGG19, ResNet18.

Each cell has both accuracies: ``robust_acc`` (right on the clean and on the adversarial image)
and ``perturbed_acc`` (right on the adversarial image alone, the metric the seed reports print)."""
from __future__ import annotations

import argparse

from .common import add_model_source_args, add_runtime_args
from .sweep import named

NAME = "score"
ORDER = 35
HELP = "score saved adversarial examples (evaluate --save-adv) on several models: a transfer matrix"
CAPTIONS = {"robust_acc": "robust accuracy (%): right on the clean and on the adversarial image",
            "perturbed_acc": "perturbed accuracy (%): right on the adversarial image (the reports' "
                             "metric)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adv", action="append", required=True, type=named, metavar="[NAME=]FILE",
                   help="adversarial-examples file (repeatable)")
    p.add_argument("--model", action="append", required=True, type=named, metavar="[NAME=]CKPT",
                   help="a model to score on (repeatable)")
    add_model_source_args(p)
    p.add_argument("--batch-size", type=int, default=256)
    add_runtime_args(p)
    p.add_argument("--out", help="output prefix: writes PREFIX.csv and PREFIX.json")


def run(args: argparse.Namespace) -> int:
    import csv
    import io

    from .._io import write_json, write_text
    from ..evaluation import load_adversarial
    from ..runtime import resolve_device
    from .attack_args import load_checked
    from .evaluate import check_counts
    from .outputs import Outputs

    check_counts(args)
    device = resolve_device(args.device)
    models = {name: load_checked("--model", path, "classifier", args) for name, path in args.model}
    examples = {name: load_adversarial(path) for name, path in args.adv}  # checked before work
    with Outputs(prefix=args.out) as outputs:
        rows = score_rows(models, {k: v[:3] for k, v in examples.items()},
                          batch_size=args.batch_size, device=device)

        def write() -> None:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
            write_text(f"{args.out}.csv", buf.getvalue())
            write_json(f"{args.out}.json", {"rows": rows})

        if args.out:
            outputs.write(write, keep={"rows": rows})
    for metric, caption in CAPTIONS.items():
        print(f"{caption}\n{matrix(rows, list(models), list(examples), metric)}")
    return 0


def score_rows(models: dict, examples: dict, *, batch_size: int = 256, device=None) -> list[dict]:
    """One row per (examples, model): {examples, model, n, clean_acc, robust_acc, perturbed_acc}.

    Args:
        models: name -> classifier. examples: name -> (x_adv, y, x), as load_adversarial gives.
    """
    from ..evaluation import score_adversarial

    rows = []
    for adv_name, (x_adv, y, x) in examples.items():
        for name, model in models.items():
            flags = score_adversarial(model, x_adv, y, x, batch_size=batch_size, device=device)
            rows.append({"examples": adv_name, "model": name, "n": len(y),
                         **{f"{k}_acc": float(flags[k].float().mean())
                            for k in ("clean", "robust", "perturbed")}})
    return rows


def matrix(rows: list[dict], models: list[str], examples: list[str], metric: str) -> str:
    """Examples as rows, models as columns, ``metric`` in %, as Markdown."""
    lines = ["| examples | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for adv_name in examples:
        accs = {r["model"]: r[metric] for r in rows if r["examples"] == adv_name}
        lines.append(f"| {adv_name} | " + " | ".join(f"{100 * accs[m]:.2f}" for m in models)
                     + " |")
    return "\n".join(lines)
