"""`robustlab evaluate`: clean and adversarial accuracy of a checkpoint (optionally purified)
under named attacks and threat models; or the score of saved adversarial examples."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .attack_args import (add_attack_settings, add_model_args, check_used, load_checked,
                          load_models, settings_for)
from .robustbench import autoattack_spec, info_path, model_info
from .common import (add_data_args, add_model_source_args, add_runtime_args, add_speed_args,
                     check_amp_flag)

log = logging.getLogger("robustlab")

NAME = "evaluate"
ORDER = 20
HELP = ("evaluate a classifier (a checkpoint, a state_dict, a torchvision/timm network or your "
        "own) clean and under attacks and threat models")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="classifier: a checkpoint (.safetensors), a "
                   "state_dict file with --arch, or torchvision:NAME, timm:NAME, "
                   "python:MODULE:FACTORY (with --weights)")
    add_model_source_args(p)
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
    add_speed_args(p)
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--format", choices=["robustlab", "robustbench"], default="robustlab",
                   help="robustbench: also write RobustBench's model-info JSON beside --out "
                   "(eval.json -> eval.robustbench.json; needs --attack autoattack)")


def run(args: argparse.Namespace) -> int:
    from ..distributed import world
    from ..runtime import resolve_device
    from .outputs import Outputs

    check_counts(args)
    check_amp_flag(args.amp, args.device)
    device = resolve_device(args.device)
    if args.adv:
        if args.format != "robustlab":
            from ..errors import ConfigError

            raise ConfigError("--format robustbench reports an AutoAttack run, not saved "
                              "examples (--adv)")
        return _score_saved(args, device)
    specs, needs_extractor = _specs(args)
    aa_spec = autoattack_spec(specs, args.format, args.out)
    model, source, extractor = load_models(args, args.model)
    extractor_net = extractor() if needs_extractor else None  # its file is checked before the data
    dataset = dataset_of(args.dataset, model)
    with Outputs(file=args.out) as outputs, Outputs(dir=args.save_adv, flag="--save-adv"):
        ds = _load_data(args, dataset, model)
        result = _evaluate(args, model, ds, specs, device, source, extractor_net)
        if not world().main:  # under torchrun only rank 0 writes and prints
            return 0
        out = _results_doc(args, dataset, result, model)
        info = model_info(args, model, dataset, result, aa_spec) if aa_spec else None
        outputs.write(lambda: _write(args, ds, result, dataset, out, info), keep=out)
    _print_summary(out, result.warnings)
    return 0


def _evaluate(args: argparse.Namespace, model, ds, specs, device, source, extractor):
    from ..evaluation import evaluate

    return evaluate(model, ds, specs, n=args.n, batch_size=args.batch_size, device=device,
                    seed=args.seed, source=source, extractor=extractor,
                    eot_samples=args.eot_samples, progress=not args.no_progress,
                    sanity=args.sanity, check_large_eps=args.check_large_eps,
                    keep_adv=bool(args.save_adv), **speed_options(args))


def speed_options(args: argparse.Namespace) -> dict:
    """evaluate's keyword arguments of the --amp, --channels-last and --compile flags."""
    return {"amp": args.amp, "channels_last": args.channels_last, "compile": args.compile}


def _results_doc(args: argparse.Namespace, dataset: str, result, model=None) -> dict:
    """The --out document: the checkpoints and data evaluated, then the results."""
    origin = getattr(getattr(model, "classifier", model), "robustlab_origin", None)
    out = {"model": args.model, **({"model_source": origin} if origin else {}),
           "purifier": args.purifier, "source": args.source,
           "extractor": args.extractor, "dataset": dataset, "split": args.split,
           **result.to_dict()}
    if args.save_adv:
        out["saved_adv"] = {key: str(Path(args.save_adv) / f"adv{i}.safetensors")
                            for i, key in enumerate(result.adv)}
    return out


def _write(args: argparse.Namespace, ds, result, dataset: str, out: dict,
           info: dict | None = None) -> None:
    from .._io import write_json

    if args.save_adv:
        _save_adv(args, ds, result, dataset)
    if args.out:
        write_json(args.out, out)
    if info is not None:  # RobustBench's model-info JSON, beside the results
        write_json(info_path(args.out), info)


def _print_summary(out: dict, warnings: list[dict]) -> None:
    # acc / worst_acc: robust accuracy (right clean and attacked); perturbed_*: right attacked
    summary = {k: out[k] for k in ("n", "clean_acc", "acc", "worst_acc", "perturbed_acc",
                                   "worst_perturbed_acc", "seconds")}
    print(json.dumps(summary, indent=1))
    for w in warnings:
        print(f"robustlab: warning [{w['check']}]: {w['message']}")


def check_counts(args: argparse.Namespace) -> None:
    """The numeric flags of the commands that evaluate, before anything is loaded."""
    from .._checks import check_eps, check_int

    if getattr(args, "n", None) is not None:
        check_int("--n", args.n)
    check_int("--batch-size", args.batch_size)
    if getattr(args, "eot_samples", None) is not None:
        check_int("--eot-samples", args.eot_samples)
    if getattr(args, "check_large_eps", None) is not None:
        check_eps(args.check_large_eps, name="--check-large-eps", positive=True)


def _specs(args: argparse.Namespace):
    """The AttackSpecs of the run (every name and setting checked as they are built, before any
    checkpoint is read) and whether an attack differentiates through a feature extractor."""
    from ..errors import ConfigError
    from ..evaluation import AttackSpec

    if args.threat and not args.attack:
        raise ConfigError("--threat needs at least one --attack")
    threats = args.threat or ["white-box"]
    used: set[str] = set()
    specs = [AttackSpec(a, settings_for(a, args, used), t) for a in args.attack for t in threats]
    check_used(args, args.attack, used)
    return specs, any(s.model_role == "extractor" for s in specs)


def dataset_of(name: str | None, model) -> str:
    """--dataset, else the one the (purified model's) classifier was trained on; known names
    only. A dataset other than the recorded one, or a purifier trained on another dataset than
    its classifier, is worth a warning: the numbers would mean little."""
    from ..data import DATASETS
    from ..errors import ConfigError

    classifier = getattr(model, "classifier", model)
    recorded = _trained_on(classifier)
    dataset = name or recorded
    if not dataset:
        raise ConfigError("--dataset is required (the checkpoint does not record one)")
    DATASETS.get(dataset)
    if recorded and dataset != recorded:
        log.warning("the classifier was trained on %s but is evaluated on %s", recorded, dataset)
    purifier = getattr(model, "purifier", None)
    if purifier is not None and _trained_on(purifier) not in (None, recorded or dataset):
        log.warning("the purifier was trained on %s but its classifier on %s",
                    _trained_on(purifier), recorded or dataset)
    return dataset


def _trained_on(module) -> str | None:
    return (getattr(module, "robustlab_meta", None) or {}).get("meta", {}).get("dataset")


def _load_data(args: argparse.Namespace, dataset: str, model):
    from .. import data as rl_data
    from ..errors import InputError

    from .common import data_load_args

    ds = rl_data.load(dataset, args.split, root=args.data_root,
                      **data_load_args(args, dataset, model))
    if ds.channels != model.in_channels:
        raise InputError(f"{dataset} has {ds.channels}-channel images but {args.model} expects "
                         f"{model.in_channels} channels (convert them with --channels "
                         f"{model.in_channels})")
    if ds.num_classes != model.num_classes:
        built = getattr(getattr(model, "classifier", model), "robustlab_origin", None) or {}
        hint = f" (build it with --num-classes {ds.num_classes})" if built and \
            not built.get("weights") else ""  # a count read from weights is theirs
        raise InputError(f"{dataset} has {ds.num_classes} classes but {args.model} predicts "
                         f"{model.num_classes}{hint}")
    return ds


def _save_adv(args: argparse.Namespace, ds, result, dataset: str) -> None:
    from ..evaluation import save_adversarial

    x, y = ds.images[:result.n].float() / 255, ds.labels[:result.n]
    for i, (key, x_adv) in enumerate(result.adv.items()):
        save_adversarial(Path(args.save_adv) / f"adv{i}.safetensors", x_adv, y, x, label=key,
                         model=args.model, dataset=dataset, split=args.split,
                         attack=result.config["attacks"][i])


def _score_saved(args, device) -> int:
    from .._io import write_json
    from ..evaluation import load_adversarial
    from ..evaluation.harness import score_adversarial
    from ..purifiers import Purified
    from .outputs import Outputs

    x_adv, y, x, side = load_adversarial(args.adv)
    model = load_checked("--model", args.model, "classifier", args)
    if args.purifier:
        model = Purified(load_checked("--purifier", args.purifier, "purifier", args), model)
    with Outputs(file=args.out) as outputs:
        if args.n is not None:
            x_adv, y, x = x_adv[:args.n], y[:args.n], x[:args.n]
        flags = score_adversarial(model, x_adv, y, x, batch_size=args.batch_size, device=device)
        out = {"model": args.model, "purifier": args.purifier, "adv": args.adv,
               "crafted": side.get("meta", {}), "n": len(y),
               "clean_acc": float(flags["clean"].float().mean()),
               "robust_acc": float(flags["robust"].float().mean()),
               "perturbed_acc": float(flags["perturbed"].float().mean()),
               "per_sample": {k: v.int().tolist() for k, v in flags.items()}}
        if args.out:
            outputs.write(lambda: write_json(args.out, out), keep=out)
    print(json.dumps({k: out[k] for k in ("n", "clean_acc", "robust_acc", "perturbed_acc")}))
    return 0
