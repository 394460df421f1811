"""`robustlab import-model`: any model ``--model`` accepts, saved as a robustlab checkpoint.

    robustlab import-model m.pt --arch torchvision:resnet18 --out m.safetensors --dataset cifar10
    robustlab import-model torchvision:resnet18 --weights m.pt --normalization imagenet --out m
    robustlab import-model python:mypkg.nets:build --weights w.pt --trust-code --out mine

writes ``X.safetensors`` and the sidecar ``X.json``, which records the architecture (e.g.
``torchvision:resnet18`` and its arguments) and where the model came from (``meta.imported_from``:
the source, the weights file and its sha256), so every later command takes it by path. A
``python:`` checkpoint still needs ``--trust-code`` whenever it is loaded.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .attack_args import model_source
from .common import add_model_source_args

NAME = "import-model"
ORDER = 18
HELP = ("turn a state_dict, a torchvision/timm network or your own model (python:MODULE:FACTORY) "
        "into a robustlab checkpoint that every command takes by path")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="what --model accepts: a state_dict file "
                   "(with --arch), torchvision:NAME, timm:NAME, python:MODULE:FACTORY (with "
                   "--weights), or a robustlab checkpoint")
    add_model_source_args(p)
    p.add_argument("--dataset", help="the dataset the weights were trained for (recorded, so later "
                   "commands default to it; its class count is checked now)")
    p.add_argument("--out", required=True, help="checkpoint to write (X.safetensors + X.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")


def run(args: argparse.Namespace) -> int:
    from .. import models as rl_models
    from .outputs import Outputs

    weights, sidecar = rl_models.checkpoint.checkpoint_paths(args.out)
    _check_out(args, weights, sidecar)
    options = model_source(args)  # every flag checked before anything is read
    expected = _dataset_classes(args.dataset)
    with Outputs(file=str(weights)) as outputs:
        model = rl_models.open_model(args.source, options)
        _check_fits(model, args.dataset, expected)
        meta = {"imported_from": _origin(args, options)}
        if args.dataset:
            meta["dataset"] = args.dataset
        outputs.write(lambda: rl_models.save(model, weights, **meta))
    spec = model.robustlab_spec
    print(json.dumps({"out": str(weights), "sidecar": str(sidecar), "name": spec["name"],
                      "num_classes": spec["kwargs"].get("num_classes"),
                      "in_channels": spec["kwargs"].get("in_channels"),
                      "num_parameters": sum(p.numel() for p in model.parameters())}))
    return 0


def _check_out(args: argparse.Namespace, weights: Path, sidecar: Path) -> None:
    from ..errors import ConfigError

    if str(args.out) != str(weights) and Path(args.out).suffix not in ("", ".json"):
        raise ConfigError(f"--out {args.out}: a checkpoint is X.safetensors (its sidecar X.json "
                          f"is written beside it), e.g. --out {Path(args.out).stem}.safetensors")
    if Path(args.source).resolve() in (weights.resolve(), sidecar.resolve()):
        raise ConfigError(f"--out {args.out} is the source itself; write to another file")
    existing = [p for p in (weights, sidecar) if p.exists()]
    if existing and not args.overwrite:
        raise ConfigError(f"--out {existing[0]} already exists; pass --overwrite to replace it")


def _dataset_classes(name: str | None) -> int | None:
    """The class count of a named dataset, None when it has none of its own (folder, npz)."""
    if not name:
        return None
    from ..data import DATASETS

    spec = DATASETS.get(name)
    return None if getattr(spec, "from_data", False) else spec.num_classes


def _check_fits(model, dataset: str | None, expected: int | None) -> None:
    """The class counts agree (channels need not: the data loader converts them, --channels)."""
    from ..errors import InputError

    have = getattr(model, "num_classes", None)
    if expected is not None and have != expected:
        raise InputError(f"the model predicts {have} classes but {dataset} has {expected}: give "
                         "--num-classes, or another --dataset")


def _origin(args: argparse.Namespace, options) -> dict:
    """Where the model came from: the source, its weights file and the file's sha256."""
    from .._io import sha256_file

    file = options.weights or (args.source if Path(args.source).is_file() else None)
    return {"source": args.source, "arch": options.arch, "weights": file,
            "weights_sha256": sha256_file(file) if file else None,
            "normalization": options.normalization, "input_size": options.input_size,
            "args": options.args or None}
