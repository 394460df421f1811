"""``evaluate``: clean and adversarial accuracy of a model over a dataset, per sample.

Per batch: one clean pass (and, on the first batch, the sanity checks), then each attack crafted
on the module its threat model names and scored on the module whose predictions count
(:func:`robustlab.metrics.attack_then_score`). The robust and perturbed accuracies it reports are
defined in :mod:`robustlab.evaluation.result`; the attacks and their settings, checked once, in
:mod:`robustlab.evaluation.specs`.

Under ``torchrun`` each process scores its share of the samples (x[rank::world]) and the
per-sample flags are gathered back into the original order; random starts are reproducible for a
given number of processes.

Speed options (one GPU): ``amp`` runs every forward and backward pass under autocast (each
attack's step and projection stay in float32, :mod:`robustlab.attacks.geometry`), and so do the
clean and the scoring passes; ``channels_last`` puts the model and every batch in that memory
format; ``compile`` runs each module an attack differentiates through (and the scored ones)
through ``torch.compile``, once per module.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import check_images, check_int, check_labels, model_dtype
from ..distributed import device_for, unshard, world
from ..errors import ConfigError, InputError
from ..metrics import attack_then_score, correct
from ..runtime import amp_context, channels_last as to_channels_last, check_amp, compiled
from .result import EvalResult, add_worst, mean
from .sanity import gradient_warnings, large_eps_warnings, output_warnings, threat_warnings
from .specs import AttackSpec, attack_specs, run_spec, spec_dict, with_extractor_threats
from .threats import THREAT_MODELS

log = logging.getLogger(__name__)
_SEED_STRIDE = 1_000_003
_BATCH_STRIDE = 7919


def evaluate(model: nn.Module, data, attacks: Iterable[AttackSpec | str | dict] = (), *,
             n: int | None = None, batch_size: int = 256, device: str | torch.device | None = None,
             seed: int = 0, source: nn.Module | None = None, extractor: nn.Module | None = None,
             eot_samples: int = 10, progress: bool = False, sanity: bool = False,
             check_large_eps: float | None = None, keep_adv: bool = False,
             attack: AttackSpec | str | dict | Sequence | None = None, amp=None,
             channels_last: bool = False, compile: bool = False) -> EvalResult:
    """Score ``model`` on ``data`` clean and under each attack (see the module docstring).

    Args:
        model: a classifier ([0,1] images -> logits), or ``Purified(purifier, classifier)``.
        data: an ImageDataset, a torch Dataset yielding (image, label) (tensors in [0, 1] or
            PIL images), a DataLoader yielding (x, y), or an (x, y) tensor pair; float images
            are evaluated exactly as given (see :func:`robustlab.data.as_tensors`).
        attacks: AttackSpecs, names, or mappings {"name", "threat", **settings}.
        source: the source model of "transfer" attacks. extractor: the frozen feature extractor of
            "feature-distortion" (always the module it differentiates through).
        sanity: run the gradient-masking checks (results.warnings).
        check_large_eps: also run PGD-20 white-box at this (large) eps on the first batch and warn
            unless accuracy falls near zero.
        keep_adv: keep the crafted examples (on the CPU) in ``result.adv``.
        attack: one attack (or a list), the same as ``attacks`` (DESIGN.md's spelling).
        amp: None/"none", "bf16" or "fp16" (fp16 needs a CUDA GPU: ConfigError otherwise), or a
            dtype: autocast for every pass (see the module docstring). An attack given its own
            ``amp_dtype`` keeps it.
        channels_last: the model (in place, as it is moved to ``device``) and every batch in
            channels_last memory format. compile: ``torch.compile`` the attacked and scored
            modules (the model's own parameters, shared).
    Returns: an :class:`EvalResult`.
    """
    specs = attack_specs(attacks, attack)
    check_int("batch_size", batch_size)
    check_int("eot_samples", eot_samples)
    specs = with_extractor_threats(specs, model, extractor)
    w = world()
    device = device_for(w, torch.device(device) if device else _device_of(model))
    options = _Options(seed, sanity, check_large_eps, keep_adv, check_amp(amp, device),
                       _flag("channels_last", channels_last), _flag("compile", compile))
    x_all, y_all = _checked_tensors(model, data, n)
    x_share, y_share = x_all[w.rank::w.size], y_all[w.rank::w.size]  # this process's share
    run = _setup(model, source, extractor, specs, device, eot_samples, options)
    tally = _Tally.start([s.key for s in specs])
    starts = range(0, len(y_share), batch_size)
    for b, i in enumerate(tqdm(starts, desc="evaluate", disable=not progress, leave=False)):
        xb = to_channels_last(x_share[i:i + batch_size].to(device), options.channels_last)
        _score_batch(run, tally, b, xb, y_share[i:i + batch_size].to(device))
    return _result(run, tally, w, len(y_all), _config(run, len(y_all), batch_size, eot_samples, w))


@dataclass(frozen=True)
class _Options:
    seed: int
    sanity: bool
    check_large_eps: float | None
    keep_adv: bool
    amp: torch.dtype | None = None  # autocast dtype of every pass
    channels_last: bool = False
    compile: bool = False


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


@dataclass(frozen=True)
class _Setup:
    """What every batch of one evaluation uses: the evaluated model (on the device, in eval mode)
    and, per attack key, the module the attacker differentiates through and the one scored."""

    model: nn.Module
    specs: list[AttackSpec]
    attacked: dict[str, nn.Module]
    scored: dict[str, nn.Module]
    device: torch.device
    options: _Options


@dataclass
class _Tally:
    """Per-batch outputs, concatenated and gathered across processes at the end."""

    flags: dict[str, list[torch.Tensor]]  # robust flags: "clean" and each attack key
    perturbed: dict[str, list[torch.Tensor]]  # right on x_adv alone, per attack key
    kept: dict[str, list[torch.Tensor]]  # the crafted examples (keep_adv)
    seconds: dict[str, float]
    warnings: list[dict] = field(default_factory=list)

    @classmethod
    def start(cls, keys: list[str]) -> "_Tally":
        return cls({"clean": [], **{k: [] for k in keys}}, {k: [] for k in keys},
                   {k: [] for k in keys}, {"clean": 0.0, **{k: 0.0 for k in keys}})


def _setup(model, source, extractor, specs, device, eot_samples, options) -> _Setup:
    """Put the models on the device in eval mode (channels_last when asked) and build each
    attack's two modules (a threat model that needs a purifier or a source it was not given
    fails here), then the speed options' wrappers (see :func:`_fast`)."""
    def ready(m):
        return None if m is None else to_channels_last(m.to(device), options.channels_last).eval()

    model, source, extractor = ready(model), ready(source), ready(extractor)
    attacked = {s.key: extractor if s.model_role == "extractor" else
                THREAT_MODELS.get(s.threat).attacked(model, source, eot_samples) for s in specs}
    scored = {s.key: THREAT_MODELS.get(s.threat).scored(model) for s in specs}
    fast = _fast(options)
    amp_own = {s.key: "amp_dtype" in {f.name for f in dataclasses.fields(s.typed)} for s in specs}
    return _Setup(fast(model, True), list(specs),
                  {k: fast(m, amp_own[k]) for k, m in attacked.items()},
                  {k: fast(m, True) for k, m in scored.items()}, device, options)


def _fast(options: _Options):
    """``fast(module, autocast_outside)``: the module compiled (once per module, so that the
    attacks sharing it share its compiled code) and, with amp, run under autocast unless the
    attack autocasts its own passes (``autocast_outside`` False: it takes ``amp_dtype``)."""
    done: dict[int, nn.Module] = {}

    def fast(module: nn.Module, autocast_outside: bool) -> nn.Module:
        if id(module) not in done:
            done[id(module)] = compiled(module, options.compile)
        out = done[id(module)]
        return _Autocast(out, options.amp) if options.amp and autocast_outside else out
    return fast


class _Autocast(nn.Module):
    """``module`` under autocast, its outputs back in float32 (scores and losses stay fp32)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with amp_context(self.dtype, x.device):
            out = self.module(x)
        return out.float() if out.is_floating_point() else out


def _score_batch(run: _Setup, tally: _Tally, b: int, x: torch.Tensor, y: torch.Tensor) -> None:
    """Batch ``b``: the clean pass (and, on the first batch, the sanity checks), then every
    attack, each from its own seed."""
    opt = run.options
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = run.model(x)
    clean = logits.argmax(1) == y
    tally.seconds["clean"] += time.perf_counter() - t0
    tally.flags["clean"].append(clean.cpu())
    if b == 0:
        tally.warnings += output_warnings(logits)
        if opt.sanity:
            tally.warnings += gradient_warnings(run.model, x, y)
        if opt.check_large_eps is not None:
            tally.warnings += large_eps_warnings(run.model, x, y, opt.check_large_eps, opt.seed)
    for a, spec in enumerate(run.specs):
        _attack_batch(run, tally, spec, x, y, clean,
                      opt.seed * _SEED_STRIDE + b * _BATCH_STRIDE + a)


def _attack_batch(run: _Setup, tally: _Tally, spec: AttackSpec, x: torch.Tensor,
                  y: torch.Tensor, clean: torch.Tensor, attack_seed: int) -> None:
    """One attack on one batch: craft, score, and add its flags and time to the tally."""
    t0 = time.perf_counter()
    stochastic = THREAT_MODELS.get(spec.threat).stochastic
    with torch.random.fork_rng(devices=_rng_devices(run.device), enabled=stochastic):
        # a stochastic defence's dropout masks come from seeded draws; the caller's global
        # random state is put back afterwards
        if stochastic:
            torch.manual_seed(attack_seed)
        x_adv, adv_ok = attack_then_score(
            lambda module, xb, yb: run_spec(spec, module, xb, yb, attack_seed,
                                            run.options.amp),
            run.attacked[spec.key], x, y, scored=run.scored[spec.key])
    tally.seconds[spec.key] += time.perf_counter() - t0
    tally.flags[spec.key].append((clean & adv_ok).cpu())
    tally.perturbed[spec.key].append(adv_ok.cpu())
    if run.options.keep_adv:
        tally.kept[spec.key].append(x_adv.cpu())


def _result(run: _Setup, tally: _Tally, w, n_total: int, config: dict) -> EvalResult:
    """Gather the flags of every process, add the worst cases and the end-of-run warnings."""
    keys = [s.key for s in run.specs]
    per_sample, per_sample_perturbed = _gather(tally.flags, w), _gather(tally.perturbed, w)
    add_worst(per_sample, per_sample_perturbed, keys)
    acc = {k: mean(per_sample[k]) for k in keys}
    warnings = tally.warnings + threat_warnings(run.specs, acc, n_total)
    if any(s.threat == "eot" for s in run.specs) and not _has_dropout(run.model):
        warnings.append({"check": "eot-on-deterministic-defence", "message": (
            "EOT was asked for but the model has no dropout: every pass is the same, so the eot "
            "numbers equal white-box ones at eot_samples times the cost")})
    return EvalResult(n_total, mean(per_sample["clean"]), acc, mean(per_sample["worst"]),
                      per_sample, warnings, {k: round(v, 3) for k, v in tally.seconds.items()},
                      config, {k: unshard(torch.cat(v), w) for k, v in tally.kept.items() if v},
                      perturbed_acc={k: mean(per_sample_perturbed[k]) for k in keys},
                      worst_perturbed_acc=mean(per_sample_perturbed["worst"]),
                      per_sample_perturbed=per_sample_perturbed)


def _config(run: _Setup, n_total: int, batch_size: int, eot_samples: int, w) -> dict:
    """The evaluation as run, for the results file: every attack with its settings resolved."""
    opt = run.options
    return {"n": n_total, "batch_size": batch_size, "seed": opt.seed,
            "eot_samples": eot_samples, "device": str(run.device), "processes": w.size,
            "seeds": f"per batch b and attack a: seed * {_SEED_STRIDE} + b * {_BATCH_STRIDE} + a",
            "amp": _AMP_NAMES.get(opt.amp, "none"), "channels_last": opt.channels_last,
            "compile": opt.compile, "attacks": [spec_dict(s, opt.amp) for s in run.specs]}


_AMP_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


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
    for i in range(0, len(y), batch_size):
        yb = y[i:i + batch_size].to(device)
        clean = correct(model, x[i:i + batch_size].to(device), yb)
        adv = correct(model, x_adv[i:i + batch_size].to(device), yb)
        out["clean"].append(clean.cpu())
        out["robust"].append((clean & adv).cpu())
        out["perturbed"].append(adv.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def _checked_tensors(model: nn.Module, data, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images and labels of ``data``, checked against the model (channels, [0, 1],
    class indices) and in its dtype (float64 images for a float32 model)."""
    x, y = _tensors(data, n)
    check_images(x, getattr(model, "in_channels", None))
    x = x.to(model_dtype(model) or x.dtype)
    check_labels(y, len(y), getattr(model, "num_classes", None))
    return x, y


def _tensors(data, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` samples of any data ``rl.data.as_tensors`` takes (an ImageDataset, a torch
    Dataset or DataLoader, (x, y) tensors); float images stay exactly as given."""
    from ..data import as_tensors

    if n is not None and n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    x, y = as_tensors(data, limit=n)
    if n is not None and n > len(y):
        name = getattr(data, "name", "the data")
        log.warning("n=%d asked for, but %s has %d samples: evaluating all %d", n, name,
                    len(y), len(y))
    return x, y


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def _rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []
