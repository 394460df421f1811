"""Flags shared by the commands that run attacks (evaluate, sweep): attack settings, threat
models, and the models an attack may need (source, extractor, purifier)."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..defaults import step_text
from ..errors import ConfigError
from .common import apply_sets, number

# flag -> attack setting (applied to every attack that has the setting)
COMMON = {"eps": "eps", "steps": "steps", "step_size": "step_size", "norm": "norm",
          "restarts": "restarts", "random_start": "random_start", "objective": "objective"}


def add_attack_settings(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("attack settings (applied to every attack that has them)")
    g.add_argument("--eps", type=number, help="budget in [0,1] pixel units (e.g. 0.1 or 8/255)")
    g.add_argument("--steps", type=int, help="iterations")
    g.add_argument("--step-size", type=number, help=f"step (default per attack, e.g. {step_text('pgd')} for pgd)")
    g.add_argument("--norm", choices=["linf", "l2"])
    g.add_argument("--restarts", type=int)
    g.add_argument("--no-random-start", dest="random_start", action="store_false", default=None)
    g.add_argument("--objective", help="pgd objective: ce, cw, kl, ...")
    g.add_argument("--attack-set", action="append", metavar="KEY=VALUE",
                   help="any other attack setting, e.g. version=custom (repeatable)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models an attack may need")
    g.add_argument("--purifier", help="purifier checkpoint: evaluate Purified(purifier, model)")
    g.add_argument("--source", help="source checkpoint of transfer attacks")
    g.add_argument("--extractor", help="classifier checkpoint whose first blocks feature-distortion "
                   "attacks (default: the evaluated classifier)")
    g.add_argument("--extractor-blocks", type=int, default=2, help="convolution blocks of the extractor")
    g.add_argument("--eot-samples", type=int, default=10, help="stochastic passes per EOT gradient")


def settings_for(name: str, args: argparse.Namespace, used: set[str]) -> dict[str, Any]:
    """The settings of attack ``name`` taken from the common flags and --attack-set. Their values
    are not checked here: the AttackSpec built from them checks every setting, once."""
    from .. import attacks as rl_attacks

    fields = {f.name for f in dataclasses.fields(rl_attacks.ATTACKS.get(name).settings)}
    out: dict[str, Any] = {}
    for flag, key in COMMON.items():
        value = getattr(args, flag, None)
        if value is not None and key in fields:
            out[key] = value
            used.add(flag)
    extra = apply_sets({}, getattr(args, "attack_set", None))
    for key, value in extra.items():
        if key in fields:
            out[key] = value
            used.add(f"set:{key}")
    return out


def check_used(args: argparse.Namespace, names: list[str], used: set[str]) -> None:
    """A flag no chosen attack accepts is a mistake, not something to ignore silently."""
    for flag in COMMON:
        if getattr(args, flag, None) is not None and flag not in used:
            raise ConfigError(f"--{flag.replace('_', '-')} is not a setting of "
                              f"{', '.join(names) or 'any attack'}")
    for key in apply_sets({}, getattr(args, "attack_set", None)):
        if f"set:{key}" not in used:
            raise ConfigError(f"--attack-set {key}=... is not a setting of {', '.join(names)}")


def model_source(args: argparse.Namespace | None):
    """The ModelSource of the --model flags (add_model_source_args); empty without them."""
    from ..models import ModelSource

    if args is None:
        return ModelSource()
    sets = getattr(args, "model_arg", None)
    return ModelSource(
        arch=getattr(args, "arch", None), weights=getattr(args, "weights", None),
        num_classes=getattr(args, "num_classes", None),
        in_channels=getattr(args, "in_channels", None),
        input_size=getattr(args, "input_size", None),
        mean=_stats(getattr(args, "mean", None)), std=_stats(getattr(args, "std", None)),
        normalization=getattr(args, "normalization", None), width=getattr(args, "width", None),
        args=apply_sets({}, sets) if sets else {},
        trust_code=bool(getattr(args, "trust_code", False)))


def _stats(values):
    return None if values is None else tuple(float(v) for v in values)


def load_checked(flag: str, path: str, kind: str, args: argparse.Namespace | None = None):
    """The module ``path`` names for ``flag``: for --model (given ``args``), anything
    ``robustlab.models.open_model`` takes with the model flags (a checkpoint, a state_dict with
    --arch, torchvision:/timm:/python: with --weights); for other flags a checkpoint of ``kind``
    (--trust-code applies to all). An error names the flag it came from, e.g. "--model:
    runs/ssr/purifier.safetensors is a purifier checkpoint, not a classifier; pass it as
    --purifier"."""
    from .. import models as rl_models
    from ..errors import CheckpointError

    trust = bool(getattr(args, "trust_code", False))
    if flag != "--model" and Path(path).suffix in rl_models.sources.STATE_DICT_SUFFIXES:
        raise ConfigError(f"{flag}: {path} is a plain state_dict; make it a checkpoint first: "
                          f"robustlab import-model {path} --arch NAME --out "
                          f"{Path(path).with_suffix('.safetensors')}")
    try:
        if kind == "classifier" and flag == "--model":
            return rl_models.open_model(path, model_source(args))
        if kind == "classifier":
            return rl_models.open_model(path, rl_models.ModelSource(trust_code=trust))
        return rl_models.load(path, kind=kind, trust_code=trust)
    except (CheckpointError, ConfigError) as exc:
        raise type(exc)(f"{flag}: {exc}") from None


def load_models(args: argparse.Namespace, model_path: str):
    """(evaluated model, source, extractor factory) from the checkpoint flags; --model, --source
    and --extractor must be classifiers and --purifier a purifier (CheckpointError otherwise)."""
    from .. import models as rl_models
    from ..purifiers import Purified

    classifier = load_checked("--model", model_path, "classifier", args)
    purifier = load_checked("--purifier", args.purifier, "purifier", args) if args.purifier \
        else None
    model = Purified(purifier, classifier) if purifier is not None else classifier
    source = load_checked("--source", args.source, "classifier", args) if args.source else None

    def extractor():  # built only when an attack needs it
        base = load_checked("--extractor", args.extractor, "classifier", args) \
            if args.extractor else classifier
        return rl_models.feature_extractor(base, args.extractor_blocks)

    return model, source, extractor
