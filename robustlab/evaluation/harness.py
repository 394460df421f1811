"""``evaluate``: clean and adversarial accuracy of a model over a dataset, per sample.

Under ``torchrun`` each process scores its share of the samples (x[rank::world]) and the
per-sample flags are gathered back into the original order; random starts are reproducible for a
given number of processes.

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

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import attacks as rl_attacks
from .._checks import check_images, check_int, check_labels, model_dtype
from .._io import provenance
from ..distributed import device_for, unshard, world
from ..errors import ConfigError, InputError
from ..purifiers import Purified
from .sanity import gradient_warnings, large_eps_warnings, output_warnings, threat_warnings
from .threats import THREAT_MODELS

log = logging.getLogger(__name__)
_SEED_STRIDE = 1_000_003
_BATCH_STRIDE = 7919


@dataclass(frozen=True)
class AttackSpec:
    """One attack under one threat model. ``settings`` are checked against the attack's own."""

    name: str
    settings: dict = field(default_factory=dict)
    threat: str = "white-box"
    label: str | None = None

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        args = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(self.settings.items()))
        return f"{self.name}[{args}]@{self.threat}" if args else f"{self.name}@{self.threat}"


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


def as_spec(item: AttackSpec | str | dict) -> AttackSpec:
    if isinstance(item, AttackSpec):
        spec = item
    elif isinstance(item, str):
        spec = AttackSpec(item)
    elif isinstance(item, dict):
        item = dict(item)
        spec = AttackSpec(item.pop("name"), threat=item.pop("threat", "white-box"),
                          label=item.pop("label", None), settings=item.pop("settings", item))
    else:
        raise ConfigError(f"an attack is a name, a mapping or an AttackSpec, got {item!r}")
    rl_attacks.ATTACKS.get(spec.name)
    THREAT_MODELS.get(spec.threat)
    rl_attacks.attack_settings(spec.name, **spec.settings)  # unknown settings fail before any work
    return spec


def evaluate(model: nn.Module, data, attacks: Iterable[AttackSpec | str | dict] = (), *,
             n: int | None = None, batch_size: int = 256, device: str | torch.device | None = None,
             seed: int = 0, source: nn.Module | None = None, extractor: nn.Module | None = None,
             eot_samples: int = 10, progress: bool = False, sanity: bool = False,
             check_large_eps: float | None = None, keep_adv: bool = False,
             attack: AttackSpec | str | dict | Sequence | None = None) -> EvalResult:
    """Score ``model`` on ``data`` clean and under each attack (see the module docstring).

    Args:
        model: a classifier ([0,1] images -> logits), or ``Purified(purifier, classifier)``.
        data: an ImageDataset or an (x, y) tensor pair.
        attacks: AttackSpecs, names, or mappings {"name", "threat", **settings}.
        source: the source model of "transfer" attacks. extractor: the frozen feature extractor of
            "feature-distortion" (always the module it differentiates through).
        sanity: run the gradient-masking checks (results.warnings).
        check_large_eps: also run PGD-20 white-box at this (large) eps on the first batch and warn
            unless accuracy falls near zero.
        keep_adv: keep the crafted examples (on the CPU) in ``result.adv``.
        attack: one attack (or a list), the same as ``attacks`` (DESIGN.md's spelling).
    Returns: an :class:`EvalResult`.
    """
    if attack is not None:  # DESIGN.md's rl.evaluate(model, data, attack=...)
        attacks = [*attacks, *([attack] if isinstance(attack, (str, dict, AttackSpec)) else attack)]
    specs = [as_spec(a) for a in attacks]
    if len({s.key for s in specs}) != len(specs):
        raise ConfigError("two attacks share a label; give them distinct settings or labels")
    check_int("batch_size", batch_size)
    check_int("eot_samples", eot_samples)
    for s in specs:
        if rl_attacks.ATTACKS.get(s.name).model_role == "extractor" and extractor is None:
            raise ConfigError(f"{s.name} needs a feature extractor (--extractor CKPT)")
    if extractor is not None:  # say honestly whose features the label-free attack used; the
        # threat of an extractor attack is decided by the extractor, so duplicates collapse
        specs = list({sp.key: sp for sp in (
            dataclasses.replace(s, threat=_extractor_threat(model, extractor))
            if rl_attacks.ATTACKS.get(s.name).model_role == "extractor" else s
            for s in reversed(specs))}.values())[::-1]
    w = world()
    device = device_for(w, torch.device(device) if device else _device_of(model))
    x_all, y_all = _tensors(data, n)
    check_images(x_all, getattr(model, "in_channels", None))
    x_all = x_all.to(model_dtype(model) or x_all.dtype)  # float64 images for a float32 model
    check_labels(y_all, len(y_all), getattr(model, "num_classes", None))
    n_total = len(y_all)
    x_all, y_all = x_all[w.rank::w.size], y_all[w.rank::w.size]  # this process's share
    model = model.to(device).eval()
    source = source.to(device).eval() if source is not None else None
    extractor = extractor.to(device).eval() if extractor is not None else None
    attacked = {s.key: _attacked_module(s, model, source, extractor, eot_samples) for s in specs}
    scored = {s.key: THREAT_MODELS.get(s.threat).scored(model) for s in specs}

    flags: dict[str, list[torch.Tensor]] = {"clean": [], **{s.key: [] for s in specs}}
    perturbed: dict[str, list[torch.Tensor]] = {s.key: [] for s in specs}  # right on x_adv alone
    kept: dict[str, list[torch.Tensor]] = {s.key: [] for s in specs}
    seconds = {"clean": 0.0, **{s.key: 0.0 for s in specs}}
    warnings: list[dict] = []
    starts = range(0, len(y_all), batch_size)
    for b, i in enumerate(tqdm(starts, desc="evaluate", disable=not progress, leave=False)):
        x = x_all[i:i + batch_size].to(device)
        y = y_all[i:i + batch_size].to(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = model(x)
        clean = logits.argmax(1) == y
        seconds["clean"] += time.perf_counter() - t0
        flags["clean"].append(clean.cpu())
        if b == 0:
            warnings += output_warnings(logits)
            if sanity:
                warnings += gradient_warnings(model, x, y)
            if check_large_eps is not None:
                warnings += large_eps_warnings(model, x, y, check_large_eps, seed)
        for a, s in enumerate(specs):
            t0 = time.perf_counter()
            stochastic = THREAT_MODELS.get(s.threat).stochastic
            attack_seed = seed * _SEED_STRIDE + b * _BATCH_STRIDE + a
            with torch.random.fork_rng(devices=_rng_devices(device), enabled=stochastic):
                # a stochastic defence's dropout masks come from seeded draws; the caller's
                # global random state is put back afterwards
                if stochastic:
                    torch.manual_seed(attack_seed)
                x_adv = _run(s, attacked[s.key], x, y, attack_seed)
                with torch.no_grad():
                    adv_ok = scored[s.key](x_adv).argmax(1) == y
            seconds[s.key] += time.perf_counter() - t0
            flags[s.key].append((clean & adv_ok).cpu())
            perturbed[s.key].append(adv_ok.cpu())
            if keep_adv:
                kept[s.key].append(x_adv.cpu())

    per_sample, per_sample_perturbed = _gather(flags, w), _gather(perturbed, w)
    worst = per_sample["clean"].clone()
    worst_perturbed = per_sample["clean"].clone() if not specs else None
    for s in specs:
        worst &= per_sample[s.key]
        p = per_sample_perturbed[s.key]
        worst_perturbed = p.clone() if worst_perturbed is None else worst_perturbed & p
    per_sample["worst"] = worst
    per_sample_perturbed["worst"] = worst_perturbed
    acc = {s.key: _mean(per_sample[s.key]) for s in specs}
    warnings += threat_warnings(specs, acc, n_total)
    if any(s.threat == "eot" for s in specs) and not _has_dropout(model):
        warnings.append({"check": "eot-on-deterministic-defence", "message": (
            "EOT was asked for but the model has no dropout: every pass is the same, so the eot "
            "numbers equal white-box ones at eot_samples times the cost")})
    config = {"n": n_total, "batch_size": batch_size, "seed": seed, "eot_samples": eot_samples,
              "device": str(device), "processes": w.size,
              "seeds": f"per batch b and attack a: seed * {_SEED_STRIDE} + b * {_BATCH_STRIDE} + a",
              "attacks": [_spec_dict(s) for s in specs]}
    return EvalResult(n_total, _mean(per_sample["clean"]), acc, _mean(worst), per_sample,
                      warnings, {k: round(v, 3) for k, v in seconds.items()}, config,
                      {k: unshard(torch.cat(v), w) for k, v in kept.items() if v},
                      perturbed_acc={s.key: _mean(per_sample_perturbed[s.key]) for s in specs},
                      worst_perturbed_acc=_mean(worst_perturbed),
                      per_sample_perturbed=per_sample_perturbed)


def _gather(flags: dict[str, list[torch.Tensor]], w) -> dict[str, torch.Tensor]:
    """Per-sample flags of every process, concatenated back into the original order."""
    return {k: unshard(torch.cat(v) if v else torch.zeros(0, dtype=torch.bool), w)
            for k, v in flags.items()}


def score_adversarial(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, x: torch.Tensor, *,
                      batch_size: int = 256, device=None) -> dict[str, torch.Tensor]:
    """Per-sample flags of saved examples on ``model``: "clean", "robust" (right on x and on
    x_adv) and "perturbed" (right on x_adv alone, the seed reports' metric).

    Raises: InputError when x_adv or x is not a [0, 1] batch the model takes, their shapes differ,
    or y is not one class index of the model per example.
    """
    channels, classes = getattr(model, "in_channels", None), getattr(model, "num_classes", None)
    check_images(x_adv, channels, name="adversarial examples")
    check_images(x, channels, name="clean images")
    if x.shape != x_adv.shape:
        raise InputError(f"the adversarial examples have shape {tuple(x_adv.shape)} but the clean "
                         f"images {tuple(x.shape)}; they must pair up one to one")
    check_labels(y, len(x_adv))
    if y.numel() and classes is not None and int(y.max()) >= classes:
        raise InputError(f"the labels of the adversarial examples go up to {int(y.max())} but the "
                         f"model predicts {classes} classes; were they crafted on another dataset?")
    device = torch.device(device) if device else _device_of(model)
    model = model.to(device).eval()
    out = {"clean": [], "robust": [], "perturbed": []}
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            yb = y[i:i + batch_size].to(device)
            clean = model(x[i:i + batch_size].to(device)).argmax(1) == yb
            adv = model(x_adv[i:i + batch_size].to(device)).argmax(1) == yb
            out["clean"].append(clean.cpu())
            out["robust"].append((clean & adv).cpu())
            out["perturbed"].append(adv.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


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


def _attacked_module(spec, model, source, extractor, eot_samples):
    if rl_attacks.ATTACKS.get(spec.name).model_role == "extractor":
        return extractor
    return THREAT_MODELS.get(spec.threat).attacked(model, source, eot_samples)


def _run(spec: AttackSpec, module: nn.Module, x, y, seed: int) -> torch.Tensor:
    settings = dict(spec.settings)
    fields = {f.name for f in dataclasses.fields(rl_attacks.ATTACKS.get(spec.name).settings)}
    if "seed" in fields and "generator" not in settings and settings.get("seed") is None:
        settings["seed"] = seed % (2**62)
    if "early_stop" in fields and "early_stop" not in settings:
        settings["early_stop"] = _early_stop(spec)
    return rl_attacks.run_attack(spec.name, module, x, y, **settings)


def _early_stop(spec: AttackSpec) -> bool:
    """The harness keeps the first fooling iterate when the attacked module's predictions are the
    scored ones (white-box, BPDA) and the objective is a classifier loss: cheaper, never weaker."""
    return THREAT_MODELS.get(spec.threat).early_stop_ok and _classifier_objective(spec.settings)


def _has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def _rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


def _classifier_objective(settings: dict) -> bool:
    return settings.get("objective", "ce") in ("ce", "cw") and not settings.get("targeted", False)


def _tensors(data, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data if isinstance(data, (tuple, list)) and len(data) == 2 else (data.images, data.labels)
    if n is not None:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        if n > len(y):
            name = getattr(data, "name", "the data")
            log.warning("n=%d asked for, but %s has %d samples: evaluating all %d", n, name,
                        len(y), len(y))
        x, y = x[:n], y[:n]
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    if x.dim() != 4 or x.shape[0] != y.shape[0]:
        raise InputError(f"expected images (N, C, H, W) and labels (N,), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    return x, y


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _mean(flags: torch.Tensor) -> float:
    return float(flags.float().mean()) if flags.numel() else float("nan")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _spec_dict(s: AttackSpec) -> dict:
    """The attack as run: every setting after defaults (the seed is per batch, see config)."""
    resolved = rl_attacks.effective_settings(s.name, **s.settings)
    if "early_stop" in resolved and "early_stop" not in s.settings:
        resolved["early_stop"] = _early_stop(s)
    resolved.pop("generator", None)
    resolved.pop("seed", None)
    return {"label": s.key, "name": s.name, "threat": s.threat, "given": _plain(s.settings),
            "settings": _plain(resolved)}


def _plain(d: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v))
            for k, v in d.items()}
