"""`robustlab evaluate`: clean and adversarial accuracy of a checkpoint (optionally purified)
under named attacks and threat models; or the score of saved adversarial examples."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .attack_args import add_attack_settings, add_model_args, check_used, load_models, settings_for
from .common import add_data_args, add_runtime_args

NAME = "evaluate"
ORDER = 20
HELP = "evaluate a checkpoint clean and under attacks and threat models"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="classifier checkpoint (.safetensors)")
    add_data_args(p, split=True)
    p.add_argument("--attack", action="append", default=[],
                   help="attack name, repeatable (see `robustlab list attacks`)")
    p.add_argument("--threat", action="append", default=[],
                   help="threat model, repeatable: white-box (default), transfer, gray-box, bpda, eot")
    add_attack_settings(p)
    add_model_args(p)
    p.add_argument("--n", type=int, default=None, help="evaluate the first N samples (default: all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--sanity", action="store_true", help="run the gradient-masking checks")
    p.add_argument("--check-large-eps", type=float, metavar="EPS",
                   help="warn unless PGD at this large eps drives accuracy near zero")
    p.add_argument("--save-adv", metavar="DIR", help="save each attack's examples under DIR")
    p.add_argument("--adv", help="score saved adversarial examples instead of attacking")
    add_runtime_args(p)
    p.add_argument("--out", help="write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    from .. import attacks as rl_attacks
    from .. import data as rl_data
    from .._io import write_json
    from ..errors import ConfigError, InputError
    from ..evaluation import AttackSpec, evaluate, save_adversarial
    from ..training.trainer import resolve_device

    device = resolve_device(args.device)
    if args.adv:
        return _score_saved(args, device)
    model, source, extractor = load_models(args, args.model)
    meta = getattr(model, "robustlab_meta", None) or getattr(
        getattr(model, "classifier", None), "robustlab_meta", {})
    dataset = args.dataset or meta.get("meta", {}).get("dataset")
    if not dataset:
        raise ConfigError("--dataset is required (the checkpoint does not record one)")
    ds = rl_data.load(dataset, args.split, root=args.data_root)
    if ds.channels != model.in_channels:
        raise InputError(f"{dataset} has {ds.channels}-channel images but {args.model} expects "
                         f"{model.in_channels} channels")
    if ds.num_classes != model.num_classes:
        raise InputError(f"{dataset} has {ds.num_classes} classes but {args.model} predicts "
                         f"{model.num_classes}")
    threats = args.threat or ["white-box"]
    used: set[str] = set()
    specs = [AttackSpec(a, settings_for(a, args, used), t) for a in args.attack for t in threats]
    check_used(args, args.attack, used)
    if args.threat and not args.attack:
        raise ConfigError("--threat needs at least one --attack")
    needs_extractor = any(rl_attacks.ATTACKS.get(a).model_role == "extractor" for a in args.attack)
    result = evaluate(model, ds, specs, n=args.n, batch_size=args.batch_size, device=device,
                      seed=args.seed, source=source, extractor=extractor() if needs_extractor else None,
                      eot_samples=args.eot_samples, progress=not args.no_progress,
                      sanity=args.sanity, check_large_eps=args.check_large_eps,
                      keep_adv=bool(args.save_adv))
    from ..distributed import world

    if not world().main:  # under torchrun only rank 0 writes and prints
        return 0
    out = {"model": args.model, "purifier": args.purifier, "source": args.source,
           "extractor": args.extractor, "dataset": dataset, "split": args.split, **result.to_dict()}
    if args.save_adv:
        x, y = ds.images[:result.n].float() / 255, ds.labels[:result.n]
        out["saved_adv"] = {}
        for i, (key, x_adv) in enumerate(result.adv.items()):
            path = Path(args.save_adv) / f"adv{i}.safetensors"
            save_adversarial(path, x_adv, y, x, label=key, model=args.model, dataset=dataset,
                             split=args.split, attack=result.config["attacks"][i])
            out["saved_adv"][key] = str(path)
    if args.out:
        write_json(args.out, out)
    summary = {k: out[k] for k in ("n", "clean_acc", "acc", "worst_acc", "seconds")}
    print(json.dumps(summary, indent=1))
    for w in result.warnings:
        print(f"robustlab: warning [{w['check']}]: {w['message']}")
    return 0


def _score_saved(args, device) -> int:
    from .. import models as rl_models
    from .._io import write_json
    from ..evaluation import load_adversarial
    from ..evaluation.harness import score_adversarial
    from ..purifiers import Purified

    x_adv, y, x, side = load_adversarial(args.adv)
    if args.n is not None:
        x_adv, y, x = x_adv[:args.n], y[:args.n], x[:args.n]
    model = rl_models.load(args.model)
    if args.purifier:
        model = Purified(rl_models.load(args.purifier), model)
    flags = score_adversarial(model, x_adv, y, x, batch_size=args.batch_size, device=device)
    out = {"model": args.model, "purifier": args.purifier, "adv": args.adv,
           "crafted": side.get("meta", {}), "n": len(y),
           "clean_acc": float(flags["clean"].float().mean()),
           "robust_acc": float(flags["robust"].float().mean()),
           "per_sample": {k: v.int().tolist() for k, v in flags.items()}}
    if args.out:
        write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("n", "clean_acc", "robust_acc")}))
    return 0
