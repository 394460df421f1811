"""`robustlab train`: train a classifier with any registered method."""
from __future__ import annotations

import argparse
import json

from ..defaults import step_text
from .common import (add_data_args, add_optim_args, add_run_args, config_from_args, data_settings,
                     number, size, val_size)

NAME = "train"
ORDER = 10
HELP = "train a classifier (standard or adversarial); resumable"

# CLI flags that are TrainConfig fields of the same name (only flags the user gave override the
# config file)
_FIELDS = ("dataset", "model", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
           "schedule", "width", "subset", "val", "augment", "method", "seed", "amp", "init",
           "grad_clip", "warmup_epochs")
# CLI flags that are method_args keys (adversarial methods; a method refuses settings it does not
# take): flag destination -> key
_METHOD_ARGS = {"eps": "eps", "steps": "steps", "step_size": "step_size", "beta": "beta",
                "source": "source", "mix": "mix", "replays": "replays", "yopo_m": "m",
                "yopo_n": "n", "first_layer": "first_layer"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of training settings (flags override it)")
    add_data_args(p)
    p.add_argument("--model", help="classifier name (see `robustlab list models`)")
    p.add_argument("--width", type=float, help="channel multiplier (e.g. 0.25 for CPU runs)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    add_optim_args(p)
    p.add_argument("--subset", type=size, help="train on a count (20000) or fraction (0.3) of the split")
    p.add_argument("--val", type=val_size, help="validation hold-out: count or fraction (0 for "
                   "none), or 'split': the dataset's own validation split (folder/npz)")
    p.add_argument("--augment", help="augmentation preset (default: the dataset's)")
    p.add_argument("--method", help="training method (see `robustlab list methods`)")
    g = p.add_argument_group("adversarial training (become method_args; see `robustlab list "
                             "methods`)")
    g.add_argument("--eps", type=number, help="budget in [0, 1] pixel units, e.g. 8/255")
    g.add_argument("--steps", type=int, help="attack steps (pgd, trades, transfer-adv)")
    g.add_argument("--step-size", type=number, help="attack step, e.g. 2/255 (default: the "
                   f"method's: pgd {step_text('pgd')}, fast-fgsm {step_text('fast-fgsm')})")
    g.add_argument("--beta", type=float, help="trades: weight of the KL term (paper: 6)")
    g.add_argument("--source", help="transfer-adv: checkpoint of the fixed source model")
    g.add_argument("--mix", type=float, help="transfer-adv: fraction of each batch attacked: "
                   "replaced by its adversaries (0.5 when not given), or with --set "
                   "method_args.mode=inject added to the batch (1 when not given)")
    g.add_argument("--replays", type=int, help="free: passes over each mini-batch, m (paper: 8); "
                   "the run makes ceil(epochs / m) passes over the data, as many optimiser steps "
                   "as --epochs of standard training (--step-size: default eps)")
    g.add_argument("--yopo-m", type=int, help="yopo: outer iterations, full forward-backward "
                   "passes per mini-batch (default 5; method_args.m)")
    g.add_argument("--yopo-n", type=int, help="yopo: inner updates through the first layer after "
                   "each pass (default 3; method_args.n; --step-size: their step, default 2/255)")
    g.add_argument("--first-layer", help="yopo: the module the model is split after, a name from "
                   "model.named_modules() (default: the model's robustlab_first_layer, else the "
                   "first module with weights its forward runs)")
    p.add_argument("--init", help="start from this checkpoint's weights")
    p.add_argument("--linear-probe", action="store_true", default=None,
                   help="train only the final linear layer (with --init: evaluate a frozen encoder)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--from-scratch", action="store_true",
                   help="for resnet18-imagenet: random initial weights instead of ImageNet's")
    add_run_args(p, "method_args.eps=0.1")


def build_config(args: argparse.Namespace):
    from ..config import from_dict
    from ..training import TrainConfig

    extra: dict = {"method_args": {key: getattr(args, dest) for dest, key in _METHOD_ARGS.items()
                                   if getattr(args, dest, None) is not None}}
    extra.update({flag: True for flag in ("channels_last", "compile", "linear_probe")
                  if getattr(args, flag)})
    if args.from_scratch:
        extra["model_kwargs"] = {"pretrained": False}
    if data_settings(args):
        extra["data"] = data_settings(args)
    cfg = config_from_args(args, _FIELDS, ("dataset", "model"), extra)
    return from_dict(TrainConfig, cfg, where="training config")


def run(args: argparse.Namespace) -> int:
    from ..training import train

    cfg = build_config(args)
    from ..distributed import world

    final = train(cfg, args.out, data_root=args.data_root, device=args.device,
                  resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if world().main:  # under torchrun every rank returns; one prints
        print(json.dumps({"out": args.out, **final}))
    return 0
