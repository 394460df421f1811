"""Flags shared by the commands that run attacks (evaluate, sweep): attack settings, threat
models, and the models an attack may need (source, extractor, purifier)."""
from __future__ import annotations

import argparse
import dataclasses
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


def load_checked(flag: str, path: str, kind: str):
    """``robustlab.models.load(path, kind=kind)``; a CheckpointError names the flag it came from,
    e.g. "--model: runs/ssr/purifier.safetensors is a purifier checkpoint, not a classifier; pass
    it as --purifier"."""
    from .. import models as rl_models
    from ..errors import CheckpointError

    try:
        return rl_models.load(path, kind=kind)
    except CheckpointError as exc:
        raise CheckpointError(f"{flag}: {exc}") from None


def load_models(args: argparse.Namespace, model_path: str):
    """(evaluated model, source, extractor factory) from the checkpoint flags; --model, --source
    and --extractor must be classifiers and --purifier a purifier (CheckpointError otherwise)."""
    from .. import models as rl_models
    from ..purifiers import Purified

    classifier = load_checked("--model", model_path, "classifier")
    purifier = load_checked("--purifier", args.purifier, "purifier") if args.purifier else None
    model = Purified(purifier, classifier) if purifier is not None else classifier
    source = load_checked("--source", args.source, "classifier") if args.source else None

    def extractor():  # built only when an attack needs it
        base = load_checked("--extractor", args.extractor, "classifier") if args.extractor \
            else classifier
        return rl_models.feature_extractor(base, args.extractor_blocks)

    return model, source, extractor
