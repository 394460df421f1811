"""`robustlab train-purifier`: self-supervised purifier training (SSR report Alg. 2; NRP)."""
from __future__ import annotations

import argparse
import json

from .common import add_data_args, add_runtime_args, apply_sets, load_yaml, size

NAME = "train-purifier"
ORDER = 15
HELP = ("train a purifier on feature-distortion adversaries, no labels (SSR Pix2Pix or NRP); "
        "resumable")

# CLI flag -> PurifierConfig field (only flags the user gave override the config file)
_FIELDS = {"dataset": "dataset", "arch": "arch", "critic": "critic", "preset": "preset",
           "width": "width", "extractor": "extractor", "extractor_blocks": "extractor_blocks",
           "perceptual_extractor": "perceptual_extractor",
           "perceptual_blocks": "perceptual_blocks", "eps": "eps", "steps": "steps",
           "step_size": "step_size", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
           "subset": "subset", "image_size": "image_size", "augment": "augment",
           "classifier": "classifier", "val_n": "val_n", "grid_n": "grid_n", "seed": "seed",
           "amp": "amp"}


def pixels(text: str) -> float:
    """A budget in [0, 1] pixel units: "0.0627" or "16/255"."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 16/255, got "
                                         f"{text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of purifier settings (flags override it)")
    add_data_args(p)
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
    p.add_argument("--eps", type=pixels, help="feature-distortion budget, e.g. 16/255 (default)")
    p.add_argument("--steps", type=int, help="attack iterations (default 20)")
    p.add_argument("--step-size", type=pixels, help="attack step (default eps/8)")
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
    p.add_argument("--amp", choices=["none", "bf16"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any setting, e.g. --set arch_kwargs.n_blocks=4 (repeatable)")
    add_runtime_args(p)
    p.set_defaults(seed=None)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")


def build_config(args: argparse.Namespace):
    from ..config import from_dict
    from ..errors import ConfigError
    from ..training.purifier_config import PurifierConfig

    cfg = load_yaml(args.config)
    for flag, field in _FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            cfg[field] = value
    cfg = apply_sets(cfg, args.set)
    for required in ("dataset", "extractor"):
        if required not in cfg:
            raise ConfigError(f"--{required} is required (or give it in --config)")
    return from_dict(PurifierConfig, cfg, where="purifier config")


def run(args: argparse.Namespace) -> int:
    from ..training.purifier import train_purifier

    cfg = build_config(args)
    final = train_purifier(cfg, args.out, data_root=args.data_root, device=args.device,
                           resume=args.resume, overwrite=args.overwrite,
                           progress=not args.no_progress)
    print(json.dumps({"out": args.out, **final}))
    return 0
