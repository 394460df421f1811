"""`robustlab evaluate --format robustbench`: RobustBench's model-info JSON beside the results.

RobustBench (Croce et al. 2021) describes each leaderboard entry with a JSON file such as
``model_info/cifar10/Linf/Rice2020Overfitting.json``::

    {"link": ..., "name": ..., "authors": ..., "additional_data": false,
     "number_forward_passes": 1, "dataset": "cifar10", "venue": ..., "architecture": ...,
     "eps": "8/255", "clean_acc": "85.34", "reported": "58", "autoattack_acc": "53.42"}

Accuracies are percentages written as strings with two decimals, eps as written in papers. The
fields only the authors know (link, name of the paper, authors, venue, reported, additional data)
are left empty to fill in; ``threat_model`` and a ``robustlab`` block (results file, samples,
attack settings, whether AutoAttack ran in its standard version) are added, so the numbers stay
tied to how they were measured.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError

FORMATS = ("robustlab", "robustbench")
_THREAT = {"linf": "Linf", "l2": "L2"}


def info_path(out: str | Path) -> Path:
    """``eval.json`` -> ``eval.robustbench.json`` (beside robustlab's own results file)."""
    out = Path(out)
    return out.with_name(f"{out.stem if out.suffix == '.json' else out.name}.robustbench.json")


def autoattack_spec(specs: list, fmt: str, out: str | None):
    """The white-box AutoAttack spec the RobustBench file reports (None for --format robustlab);
    checked before any checkpoint or data is read."""
    if fmt == "robustlab":
        return None
    if not out:
        raise ConfigError("--format robustbench writes its file beside the results: give --out "
                          "(e.g. --out eval.json, which adds eval.robustbench.json)")
    found = [s for s in specs if s.name == "autoattack" and s.threat == "white-box"]
    if not found:
        raise ConfigError("--format robustbench reports white-box AutoAttack accuracy: add "
                          "--attack autoattack (RobustBench's threat model is white-box)")
    return found[0]


def model_info(args: argparse.Namespace, model, dataset: str, result, spec) -> dict[str, Any]:
    """The RobustBench model-info document of one evaluation."""
    s = spec.typed
    standard = s.version == "standard" and s.n_iter is None and s.n_queries is None
    return {
        "link": "", "name": Path(str(args.model)).stem, "authors": "", "additional_data": None,
        "number_forward_passes": 1,  # one forward pass per prediction (purifier included)
        "dataset": dataset, "venue": "", "architecture": architecture(model),
        "eps": eps_text(s.eps), "clean_acc": percent(result.clean_acc), "reported": "",
        "autoattack_acc": percent(result.acc[spec.key]),
        "threat_model": _THREAT[s.norm],
        "robustlab": {"results": str(args.out), "model": str(args.model),
                      "purifier": args.purifier, "split": args.split, "n": result.n,
                      "attack": spec.key, "autoattack_version": s.version,
                      "standard_autoattack": standard},
    }


def architecture(model) -> str:
    """The architecture names of the evaluated model (``unet-b + vgg19`` when purified)."""
    def name(m) -> str:
        spec = getattr(m, "robustlab_spec", None) or {}
        return spec.get("name") or type(m).__name__

    purifier = getattr(model, "purifier", None)
    classifier = getattr(model, "classifier", model)
    return f"{name(purifier)} + {name(classifier)}" if purifier is not None else name(classifier)


def eps_text(eps: float) -> str:
    """``8/255`` when eps is a whole number of 255ths, else the number (``0.5``)."""
    k = eps * 255
    return f"{round(k)}/255" if eps > 0 and abs(k - round(k)) < 1e-6 else f"{eps:g}"


def percent(acc: float) -> str:
    """An accuracy in [0, 1] as RobustBench writes it: ``"53.42"``."""
    return f"{100 * acc:.2f}"
