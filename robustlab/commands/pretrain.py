"""`robustlab pretrain`: contrastive pre-training of an encoder (SimCLR, ACL A2A/A2S/dual-BN)."""
from __future__ import annotations

import argparse
import json

from .common import (add_data_args, add_optim_args, add_run_args, check_amp_flag,
                     config_from_args, data_settings, number, size, val_size)

NAME = "pretrain"
ORDER = 12
HELP = ("contrastive pre-training of an encoder (simclr, a2a, a2s, dual-bn); labels are never "
        "read; resumable. Fine-tune with `robustlab train --init OUT/encoder.safetensors`")

# CLI flag -> PretrainConfig field (only flags the user gave override the config file)
_FIELDS = ("dataset", "model", "method", "epochs", "batch_size", "optimizer", "lr", "momentum",
           "weight_decay", "schedule", "warmup_epochs", "grad_clip", "width", "subset", "val",
           "augment", "temperature", "proj_dim", "eps", "step_size", "steps", "seed", "amp",
           "adversary", "yopo_m", "yopo_n",
           "channels_last", "compile")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of pre-training settings (flags override it)")
    add_data_args(p)
    p.add_argument("--model", help="backbone: any classifier (see `robustlab list models`)")
    p.add_argument("--width", type=float, help="channel multiplier (e.g. 0.25 for CPU runs)")
    p.add_argument("--method", help="simclr, a2a, a2s (default) or dual-bn "
                   "(see `robustlab list pretrain-methods`)")
    p.add_argument("--epochs", type=int, help="default 10 (the seed report's)")
    p.add_argument("--batch-size", type=int, help="images per batch, >= 2 (default 256)")
    add_optim_args(p)
    p.add_argument("--subset", type=size,
                   help="pre-train on a count (20000) or fraction of the split")
    p.add_argument("--val", type=val_size,
                   help="hold-out kept away from pre-training, as in `train` (or 'split')")
    p.add_argument("--augment", help="view augmentation preset (default: simclr, or simclr-signs "
                   "for data that must not be flipped)")
    p.add_argument("--temperature", type=float, help="NT-Xent temperature (default 0.5)")
    p.add_argument("--proj-dim", type=int, help="projection head output size (default 128)")
    p.add_argument("--eps", type=number, help="contrastive attack budget (default 8/255)")
    p.add_argument("--step-size", type=number, help="contrastive attack step (default 2/255)")
    p.add_argument("--steps", type=int, help="contrastive attack steps (default 5)")
    p.add_argument("--adversary", choices=["pgd", "yopo"], help="how the attacked views are made "
                   "(a2a, a2s, dual-bn): pgd (default, ACL's) or yopo: YOPO-m-n on NT-Xent, m "
                   "full passes each followed by n updates of --step-size through the first layer")
    p.add_argument("--yopo-m", type=int, help="--adversary yopo: outer iterations, full "
                   "forward-backward passes per batch (default 5)")
    p.add_argument("--yopo-n", type=int, help="--adversary yopo: inner updates through the first "
                   "layer after each pass (default 3)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    add_run_args(p, "model_kwargs.pretrained=false")


def build_config(args: argparse.Namespace):
    from ..training.contrastive.config import PretrainConfig

    extra = {"data": data_settings(args)} if data_settings(args) else None
    cfg = config_from_args(args, _FIELDS, ("dataset", "model"), extra)
    return PretrainConfig.from_dict(cfg)


def run(args: argparse.Namespace) -> int:
    from ..distributed import world
    from ..training.contrastive import pretrain

    cfg = build_config(args)
    check_amp_flag(cfg.amp, args.device)  # fp16 on a CPU: refused before anything is read
    final = pretrain(cfg, args.out, data_root=args.data_root, device=args.device,
                     resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if world().main:  # under torchrun every rank returns; one prints
        print(json.dumps({"out": args.out, "encoder": f"{args.out}/encoder.safetensors",
                          **final}))
    return 0
