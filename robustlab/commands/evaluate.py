"""`robustlab evaluate`: score a checkpoint on a dataset split."""
from __future__ import annotations

import argparse
import json
import time

from .common import add_data_args, add_runtime_args

NAME = "evaluate"
ORDER = 20
HELP = "evaluate a checkpoint: clean accuracy (and attacks, see --attack)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="classifier checkpoint (.safetensors)")
    add_data_args(p, split=True)
    p.add_argument("--n", type=int, default=None, help="evaluate the first N samples (default: all)")
    p.add_argument("--batch-size", type=int, default=256)
    add_runtime_args(p)
    p.add_argument("--out", help="write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from .. import data as rl_data
    from .. import models as rl_models
    from .._io import provenance, write_json
    from ..errors import ConfigError, InputError
    from ..evaluation.clean import predict
    from ..training.trainer import resolve_device

    model = rl_models.load(args.model)
    meta = getattr(model, "robustlab_meta", {})
    dataset = args.dataset or meta.get("meta", {}).get("dataset")
    if not dataset:
        raise ConfigError("--dataset is required (the checkpoint does not record one)")
    ds = rl_data.load(dataset, args.split, root=args.data_root)
    if args.n is not None:
        if args.n < 1:
            raise ConfigError(f"--n must be >= 1, got {args.n}")
        ds = ds.select(list(range(min(args.n, len(ds)))))
    if ds.channels != model.in_channels:
        raise InputError(f"{dataset} has {ds.channels}-channel images but {args.model} expects "
                         f"{model.in_channels} channels")
    if ds.num_classes != model.num_classes:
        raise InputError(f"{dataset} has {ds.num_classes} classes but {args.model} predicts "
                         f"{model.num_classes}")
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    pred, y = predict(model.to(device), ds, batch_size=args.batch_size, device=device)
    correct = (pred == y)
    result = {"model": args.model, "dataset": dataset, "split": args.split, "n": len(y),
              "clean_acc": float(correct.float().mean()), "seconds": round(time.perf_counter() - t0, 3),
              "seed": args.seed, "per_sample": {"clean": correct.int().tolist()},
              "provenance": provenance()}
    if args.out:
        write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_sample", "provenance")}))
    return 0
