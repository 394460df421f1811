"""What an evaluation returns: both accuracies under each attack, per sample, and their worst cases.

Two accuracies under each attack, named apart everywhere:

- **robust accuracy** (``acc``, also ``robust_acc``; per-sample flags ``per_sample``): a sample
  counts when it is classified correctly both clean and attacked (AutoAttack's convention), so it
  never exceeds clean accuracy. The worst case over several attacks is the per-sample AND of the
  clean flag and every attack's flag (``worst_acc``).
- **perturbed accuracy** (``perturbed_acc``; flags ``per_sample_perturbed``): plain accuracy on
  the attacked inputs alone, the metric both seed reports print. It can exceed clean accuracy
  (SSR Table 3: NRP 69.04% under attack, 67.06% clean) when an attack turns wrong answers right,
  e.g. an attack crafted on another model or a purifier that cleans what it is given. Its worst
  case (``worst_perturbed_acc``) is the per-sample AND over the attacks (clean accuracy when there
  are none: the unperturbed input is then the only one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .._io import provenance

METRICS = {
    "acc": "robust accuracy per attack: right on the clean input and on the attacked one "
           "(never above clean_acc); the same numbers as robust_acc",
    "worst_acc": "robust accuracy of the per-sample worst case over the attacks",
    "perturbed_acc": "accuracy on the attacked inputs alone, the seed reports' metric (may "
                     "exceed clean_acc)",
    "worst_perturbed_acc": "perturbed accuracy of the per-sample worst case over the attacks",
    "per_sample": "robust flags (clean, each attack, worst)",
    "per_sample_perturbed": "perturbed flags (each attack, worst)",
}


@dataclass
class EvalResult:
    """Accuracies in [0, 1], per-sample flags, sanity warnings, timings and the full config.

    ``acc`` (= ``robust_acc``) and ``worst_acc`` are robust accuracies, ``per_sample`` their flags
    (keys "clean", each attack key, "worst"); ``perturbed_acc`` and ``worst_perturbed_acc`` are
    accuracies on the attacked inputs alone, ``per_sample_perturbed`` their flags (each attack
    key, "worst"). See the module docstring.
    """

    n: int
    clean_acc: float
    acc: dict[str, float]
    worst_acc: float
    per_sample: dict[str, torch.Tensor]
    warnings: list[dict]
    seconds: dict[str, float]
    config: dict
    adv: dict[str, torch.Tensor] = field(default_factory=dict)
    perturbed_acc: dict[str, float] = field(default_factory=dict)
    worst_perturbed_acc: float = float("nan")
    per_sample_perturbed: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def robust_acc(self) -> dict[str, float]:
        """Robust accuracy per attack key: the same dict as ``acc``."""
        return self.acc

    @property
    def worst_robust_acc(self) -> float:
        """Robust accuracy of the per-sample worst case: ``worst_acc``."""
        return self.worst_acc

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "clean_acc": self.clean_acc, "acc": self.acc,
                "worst_acc": self.worst_acc, "perturbed_acc": self.perturbed_acc,
                "worst_perturbed_acc": self.worst_perturbed_acc, "metrics": METRICS,
                "warnings": self.warnings, "seconds": self.seconds,
                "config": self.config, "provenance": provenance(),
                "per_sample": {k: v.int().tolist() for k, v in self.per_sample.items()},
                "per_sample_perturbed": {k: v.int().tolist()
                                         for k, v in self.per_sample_perturbed.items()}}


def add_worst(per_sample: dict[str, torch.Tensor], per_sample_perturbed: dict[str, torch.Tensor],
              keys: Sequence[str]) -> None:
    """Add the "worst" flags over the attacks ``keys`` to both flag dicts (see the module
    docstring: robust worst includes the clean flag; perturbed worst is clean with no attack)."""
    worst = per_sample["clean"].clone()
    worst_perturbed = per_sample["clean"].clone() if not keys else None
    for key in keys:
        worst &= per_sample[key]
        p = per_sample_perturbed[key]
        worst_perturbed = p.clone() if worst_perturbed is None else worst_perturbed & p
    per_sample["worst"] = worst
    per_sample_perturbed["worst"] = worst_perturbed


def mean(flags: torch.Tensor) -> float:
    """The fraction of True flags (NaN when there are none)."""
    return float(flags.float().mean()) if flags.numel() else float("nan")
