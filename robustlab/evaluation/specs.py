"""The attacks of an evaluation: which attack, its settings and its threat model, checked once.

An :class:`AttackSpec` is checked when it is built (the attack and threat names, and every setting
against the attack's typed settings, by the rules its attack function applies), so a bad setting
fails before any model runs, whichever entry built it (``robustlab evaluate`` builds its specs
before reading any checkpoint; :func:`evaluate` and :func:`sweep` before their first batch). The
harness then runs it batch after batch from those settings without checking them again.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .. import attacks as rl_attacks
from ..attacks.validate import check_settings
from ..errors import ConfigError
from ..purifiers import Purified
from .threats import THREAT_MODELS


@dataclass(frozen=True)
class AttackSpec:
    """One attack under one threat model, its ``settings`` checked against the attack's own.

    ``typed`` is the attack's settings object (defaults filled in) the checks accepted.
    """

    name: str
    settings: dict = field(default_factory=dict)
    threat: str = "white-box"
    label: str | None = None
    typed: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rl_attacks.ATTACKS.get(self.name)
        THREAT_MODELS.get(self.threat)
        typed = rl_attacks.attack_settings(self.name, **self.settings)  # unknown keys, the eps rule
        object.__setattr__(self, "typed", check_settings(self.name, typed))

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        args = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(self.settings.items()))
        return f"{self.name}[{args}]@{self.threat}" if args else f"{self.name}@{self.threat}"

    @property
    def model_role(self) -> str:
        """"classifier", or "extractor" for an attack on a feature extractor."""
        return rl_attacks.ATTACKS.get(self.name).model_role


def as_spec(item: AttackSpec | str | dict) -> AttackSpec:
    """An AttackSpec from a spec, a name, or a mapping {"name", "threat", "label", **settings}
    (or with its settings under "settings")."""
    if isinstance(item, AttackSpec):
        return item
    if isinstance(item, str):
        return AttackSpec(item)
    if isinstance(item, dict):
        item = dict(item)
        return AttackSpec(item.pop("name"), threat=item.pop("threat", "white-box"),
                          label=item.pop("label", None), settings=item.pop("settings", item))
    raise ConfigError(f"an attack is a name, a mapping or an AttackSpec, got {item!r}")


def attack_specs(attacks: Iterable, attack: Any = None) -> list[AttackSpec]:
    """The specs of ``attacks`` and ``attack`` (one or a list; DESIGN.md's spelling), with
    distinct keys."""
    if attack is not None:
        attacks = [*attacks, *([attack] if isinstance(attack, (str, dict, AttackSpec)) else attack)]
    specs = [as_spec(a) for a in attacks]
    if len({s.key for s in specs}) != len(specs):
        raise ConfigError("two attacks share a label; give them distinct settings or labels")
    return specs


def with_extractor_threats(specs: Sequence[AttackSpec], model: nn.Module,
                           extractor: nn.Module | None) -> list[AttackSpec]:
    """Refuse an extractor attack without an extractor; give each one the threat its extractor
    decides (so duplicates collapse, the last one kept in the first one's place), saying honestly
    whose features the label-free attack used."""
    for s in specs:
        if s.model_role == "extractor" and extractor is None:
            raise ConfigError(f"{s.name} needs a feature extractor (--extractor CKPT)")
    if extractor is None:
        return list(specs)
    threat = _extractor_threat(model, extractor)
    return list({sp.key: sp for sp in (
        dataclasses.replace(s, threat=threat) if s.model_role == "extractor" else s
        for s in reversed(specs))}.values())[::-1]


def _extractor_threat(model: nn.Module, extractor: nn.Module) -> str:
    """white-box when the extractor is part of the evaluated model, gray-box when it is part of a
    purified model's classifier (the SSR report's setting), transfer otherwise."""
    def part_of(module: nn.Module) -> bool:
        own = list(module.parameters())
        return all(any(p is q or (p.shape == q.shape and torch.equal(p.cpu(), q.cpu())) for q in own)
                   for p in extractor.parameters())

    if isinstance(model, Purified):
        return "gray-box" if part_of(model.classifier) else "transfer"
    return "white-box" if part_of(model) else "transfer"


def early_stop(spec: AttackSpec) -> bool:
    """The harness keeps the first fooling iterate when the attacked module's predictions are the
    scored ones (white-box, BPDA) and the objective is a classifier loss: cheaper, never weaker."""
    settings = spec.settings
    classifier_loss = (settings.get("objective", "ce") in ("ce", "cw")
                       and not settings.get("targeted", False))
    return THREAT_MODELS.get(spec.threat).early_stop_ok and classifier_loss


def batch_settings(spec: AttackSpec, seed: int, amp: torch.dtype | None = None) -> dict[str, Any]:
    """The settings the attack runs with on one batch: the checked ones, the batch's ``seed``
    where the attack takes one and none (nor a generator) was given, the harness's early stop
    where it was not set, and the evaluation's autocast dtype ``amp`` where the attack takes an
    ``amp_dtype`` and was given none."""
    out = {f.name: getattr(spec.typed, f.name) for f in dataclasses.fields(spec.typed)}
    if amp is not None and "amp_dtype" in out and out["amp_dtype"] is None:
        out["amp_dtype"] = amp
    if "seed" in out and "generator" not in spec.settings and spec.settings.get("seed") is None:
        out["seed"] = seed % (2**62)
    if "early_stop" in out and "early_stop" not in spec.settings:
        out["early_stop"] = early_stop(spec)
    return out


def run_spec(spec: AttackSpec, module: nn.Module, x: torch.Tensor, y: torch.Tensor,
             seed: int, amp: torch.dtype | None = None) -> torch.Tensor:
    """The attack of ``spec`` on one batch, crafted on ``module``, from the checked settings
    (``amp``: the evaluation's autocast dtype, see :func:`batch_settings`)."""
    return rl_attacks.ATTACKS.get(spec.name).fn(module, x, y, **batch_settings(spec, seed, amp))


def spec_dict(s: AttackSpec, amp: torch.dtype | None = None) -> dict:
    """The attack as run: every setting after defaults (the seed is per batch, see config), its
    amp_dtype the evaluation's ``amp`` where it was given none."""
    resolved = rl_attacks.effective_settings(s.name, **s.settings)
    if amp is not None and "amp_dtype" in resolved and resolved["amp_dtype"] is None:
        resolved["amp_dtype"] = amp
    if "early_stop" in resolved and "early_stop" not in s.settings:
        resolved["early_stop"] = early_stop(s)
    resolved.pop("generator", None)
    resolved.pop("seed", None)
    return {"label": s.key, "name": s.name, "threat": s.threat, "given": _plain(s.settings),
            "settings": _plain(resolved)}


def _plain(d: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v))
            for k, v in d.items()}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
