"""`robustlab list [KIND]`: every registry, with a line of help per entry."""
from __future__ import annotations

import argparse
import importlib

NAME = "list"
ORDER = 0
HELP = "list datasets, models, attacks, methods and every other registered name"

# kind -> (module, registry attribute)
REGISTRIES = {
    "datasets": ("robustlab.data", "DATASETS"),
    "augmentations": ("robustlab.data", "AUGMENTATIONS"),
    "models": ("robustlab.models", "MODELS"),
    "methods": ("robustlab.training", "METHODS"),
    "pretrain-methods": ("robustlab.training", "PRETRAIN_METHODS"),
    "attacks": ("robustlab.attacks", "ATTACKS"),
    "objectives": ("robustlab.attacks", "OBJECTIVES"),
    "threat-models": ("robustlab.evaluation", "THREAT_MODELS"),
    "purifiers": ("robustlab.purifiers", "PURIFIERS"),
    "critics": ("robustlab.purifiers", "CRITICS"),
    "loss-presets": ("robustlab.purifiers", "LOSS_PRESETS"),
    "recipes": ("robustlab.experiments", "RECIPES"),
    "step-kinds": ("robustlab.experiments.kinds", "KINDS"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=sorted(REGISTRIES), help="only this registry")


def run(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        module, attr = REGISTRIES[kind]
        reg = getattr(importlib.import_module(module), attr)
        print(f"{kind}:")
        width = max((len(n) for n in reg.names()), default=0)
        for name in reg.names():
            print(f"  {name.ljust(width)}  {reg.help(name)}")
            if kind == "recipes":  # what each reproduces, and how big
                recipe = reg.get(name)
                print(f"  {''.ljust(width)}  outputs: {', '.join(recipe.outputs)}")
                print(f"  {''.ljust(width)}  presets: smoke (toy sizes, CI), quick (2 CPU cores), "
                      "paper (the report's settings, a GPU)")
    return 0
