"""`robustlab compare-pretraining`: the seed report's "pre-training vs none" PGD comparison."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..defaults import step_text
from .common import (add_data_args, add_runtime_args, apply_sets, data_settings, number, numbers,
                     size, val_size)

NAME = "compare-pretraining"
ORDER = 13
HELP = ("pre-train (contrastive) + fine-tune vs. the same training without pre-training, same "
        "budget; PGD accuracy against eps for both on one figure, with CSV/JSON/Markdown")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    p.add_argument("--model", required=True, help="backbone / classifier for both arms")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    p.add_argument("--subset", type=size,
                   help="train (both stages) on a count or fraction of the split")
    p.add_argument("--val", type=val_size, default=0.1,
                   help="validation hold-out (both stages), or 'split' (folder/npz)")
    p.add_argument("--pretrain-method", default="a2s", help="simclr, a2a, a2s or dual-bn")
    p.add_argument("--pretrain-epochs", type=int, default=10, help="the seed report's 10")
    p.add_argument("--pretrain-batch-size", type=int, default=256)
    p.add_argument("--pretrain-optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--pretrain-lr", type=float, default=0.5)
    p.add_argument("--method", default="standard",
                   help="fine-tuning / baseline training method (standard as in the report)")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning = baseline epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    p.add_argument("--lr", type=float, default=5e-4, help="default: the report's Adam 5e-4")
    p.add_argument("--linear-probe", action="store_true",
                   help="fine-tune only the final Linear of both arms (a frozen-encoder probe)")
    p.add_argument("--eps", type=numbers, default=None,
                   help="PGD budgets, comma-separated (default 0.02,0.04,...,0.15)")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--pgd-step-size", type=number, default=None,
                   help=f"default {step_text('pgd')}")
    p.add_argument("--n", type=int, default=None, help="evaluate on the first n test images")
    p.add_argument("--pretrain-set", action="append", metavar="KEY=VALUE",
                   help="override a pre-training setting, e.g. --pretrain-set steps=3")
    p.add_argument("--train-set", action="append", metavar="KEY=VALUE",
                   help="override a fine-tuning setting, e.g. --train-set weight_decay=0")
    add_runtime_args(p)
    p.add_argument("--out", required=True, help="directory for the three runs and the results")
    p.add_argument("--resume", action="store_true",
                   help="continue (or reuse) finished runs in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the runs in --out")


def build_configs(args: argparse.Namespace):
    from ..config import from_dict
    from ..errors import ConfigError
    from ..training import TrainConfig
    from ..training.contrastive.config import PretrainConfig

    if not args.dataset:
        raise ConfigError("--dataset is required")
    shared = {"dataset": args.dataset, "model": args.model, "width": args.width,
              "val": args.val, "seed": args.seed}
    if args.subset is not None:
        shared["subset"] = args.subset
    if data_settings(args):
        shared["data"] = data_settings(args)
    pre = apply_sets({**shared, "method": args.pretrain_method, "epochs": args.pretrain_epochs,
                      "batch_size": args.pretrain_batch_size,
                      "optimizer": args.pretrain_optimizer, "lr": args.pretrain_lr},
                     args.pretrain_set)
    fine = apply_sets({**shared, "method": args.method, "epochs": args.epochs,
                       "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
                       "linear_probe": args.linear_probe}, args.train_set)
    return (PretrainConfig.from_dict(pre),
            from_dict(TrainConfig, fine, where="fine-tuning config"))


def run(args: argparse.Namespace) -> int:
    from ..training.contrastive.compare import DEFAULT_EPS, compare_pretraining

    pre, fine = build_configs(args)
    summary = compare_pretraining(
        pre, fine, args.out, eps=args.eps or DEFAULT_EPS, pgd_steps=args.pgd_steps,
        step_size=args.pgd_step_size, n=args.n, data_root=args.data_root, device=args.device,
        resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    from ..distributed import world

    if not world().main:  # under torchrun every rank returns; one prints
        return 0
    print(Path(args.out, "comparison.md").read_text(), end="")
    print(json.dumps({"out": args.out, "mean_difference_points": summary["mean_difference_points"],
                      "seconds": summary["seconds"], "files": summary["files"]}))
    return 0
