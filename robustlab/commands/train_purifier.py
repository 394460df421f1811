"""`robustlab train-purifier`: self-supervised purifier training (SSR report Alg. 2; NRP)."""
from __future__ import annotations

import argparse
import json

from ..defaults import step_text
from .common import (add_data_args, add_run_args, add_speed_args, check_amp_flag,
                     config_from_args, data_settings, number, size)

NAME = "train-purifier"
ORDER = 15
HELP = ("train a purifier on feature-distortion adversaries, no labels (SSR Pix2Pix or NRP); "
        "resumable")

# CLI flags that are PurifierConfig fields of the same name (only flags the user gave override the
# config file)
_FIELDS = ("dataset", "arch", "critic", "preset", "width", "extractor", "extractor_blocks",
           "perceptual_extractor", "perceptual_blocks", "eps", "steps", "step_size", "epochs",
           "batch_size", "lr", "subset", "image_size", "augment", "classifier", "val_n", "grid_n",
           "seed", "amp", "channels_last", "compile", "gan_mode")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of purifier settings (flags override it)")
    add_data_args(p, with_size=False)  # the image side is --image-size
    p.add_argument("--arch", help="purifier (see `robustlab list purifiers`; default: the preset's)")
    p.add_argument("--critic", help="critic (see `robustlab list critics`; default: the preset's)")
    p.add_argument("--preset", help="loss preset (see `robustlab list loss-presets`; default B3, "
                                    "NRP with --arch nrp)")
    p.add_argument("--width", type=float, help="channel multiplier of purifier and critic")
    p.add_argument("--extractor", help="classifier checkpoint whose first blocks are the fixed "
                                       "feature extractor (e.g. a trained vgg19)")
    p.add_argument("--extractor-blocks", type=int, help="how many of its blocks (default 2)")
    p.add_argument("--perceptual-extractor", help="checkpoint for the perceptual loss "
                                                  "(default: --extractor)")
    p.add_argument("--perceptual-blocks", type=int, help="its blocks (default: --extractor-blocks)")
    p.add_argument("--eps", type=number, help="feature-distortion budget, e.g. 16/255 (default)")
    p.add_argument("--steps", type=int, help="attack iterations (default 20)")
    p.add_argument("--step-size", type=number, help="attack step (default "
                   f"{step_text('feature-distortion')})")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="default 16")
    p.add_argument("--lr", type=float, help="Adam learning rate of both networks (default 1e-4)")
    p.add_argument("--subset", type=size, help="train on a count or fraction of the training "
                                               "split (default 0.3)")
    p.add_argument("--image-size", type=int, help="image side (default 32)")
    p.add_argument("--augment", help="default: horizontal flips where the dataset allows them; "
                                     "'flip', 'none' or an augmentation preset")
    p.add_argument("--classifier", help="classifier scored each epoch (default: --extractor)")
    p.add_argument("--val-n", type=int, help="held-out test images scored each epoch (0: none)")
    p.add_argument("--grid-n", type=int, help="images in each epoch's grid")
    add_speed_args(p, config_fields=True)
    p.add_argument("--gan-mode", choices=["minimax", "non-saturating"],
                   help="the generator's cGAN term: log(1 - D) (default, as specified) or -log D")
    add_run_args(p, "arch_kwargs.n_blocks=4")


def build_config(args: argparse.Namespace):
    from ..config import from_dict
    from ..training.purifier.config import PurifierConfig

    extra = {"data": data_settings(args)} if data_settings(args) else None
    cfg = config_from_args(args, _FIELDS, ("dataset", "extractor"), extra)
    return from_dict(PurifierConfig, cfg, where="purifier config")


def run(args: argparse.Namespace) -> int:
    from ..distributed import world
    from ..training.purifier.trainer import train_purifier

    cfg = build_config(args)
    check_amp_flag(cfg.amp, args.device)  # fp16 on a CPU: refused before anything is read
    final = train_purifier(cfg, args.out, data_root=args.data_root, device=args.device,
                           resume=args.resume, overwrite=args.overwrite,
                           progress=not args.no_progress)
    if world().main:  # under torchrun every rank returns; one prints
        print(json.dumps({"out": args.out, **final}))
    return 0
