"""`robustlab score`: a matrix of saved adversarial examples (rows) scored on models (columns),
e.g. the SSR report's Table 1: feature-distortion examples from VGG16/VGG19 on VGG16, VGG19, ResNet18."""
from __future__ import annotations

import argparse

from .common import add_runtime_args
from .sweep import named

NAME = "score"
ORDER = 35
HELP = "score saved adversarial examples (evaluate --save-adv) on several models: a transfer matrix"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adv", action="append", required=True, type=named, metavar="[NAME=]FILE",
                   help="adversarial-examples file (repeatable)")
    p.add_argument("--model", action="append", required=True, type=named, metavar="[NAME=]CKPT",
                   help="a model to score on (repeatable)")
    p.add_argument("--batch-size", type=int, default=256)
    add_runtime_args(p)
    p.add_argument("--out", help="output prefix: writes PREFIX.csv and PREFIX.json")


def run(args: argparse.Namespace) -> int:
    import csv
    import io

    from .._io import write_json, write_text
    from ..evaluation import load_adversarial, score_adversarial
    from ..training.trainer import resolve_device
    from .attack_args import load_checked
    from .evaluate import check_counts
    from .outputs import Outputs

    check_counts(args)
    device = resolve_device(args.device)
    models = {name: load_checked("--model", path, "classifier") for name, path in args.model}
    examples = {name: load_adversarial(path) for name, path in args.adv}  # checked before work
    rows = []
    with Outputs(prefix=args.out) as outputs:
        for adv_name, (x_adv, y, x, _side) in examples.items():
            for name, model in models.items():
                flags = score_adversarial(model, x_adv, y, x, batch_size=args.batch_size,
                                          device=device)
                rows.append({"examples": adv_name, "model": name, "n": len(y),
                             "clean_acc": float(flags["clean"].float().mean()),
                             "robust_acc": float(flags["robust"].float().mean())})

        def write() -> None:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
            write_text(f"{args.out}.csv", buf.getvalue())
            write_json(f"{args.out}.json", {"rows": rows})

        if args.out:
            outputs.write(write, keep={"rows": rows})
    names = list(models)
    lines = ["| examples | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for adv_name in examples:
        accs = {r["model"]: r["robust_acc"] for r in rows if r["examples"] == adv_name}
        lines.append(f"| {adv_name} | " + " | ".join(f"{100 * accs[m]:.2f}" for m in names) + " |")
    print("\n".join(lines))
    return 0
