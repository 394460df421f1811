"""Adversarial training methods: FGSM, Fast-FGSM, PGD, TRADES and transfer-adversary injection.

Every method crafts its training inputs with the one attack engine (``robustlab.attacks``), which
runs the model in eval mode with frozen parameters (gradients w.r.t. the input only) and puts train
mode back; the training forward pass then runs in train mode. Random starts draw from the epoch
generator the trainer passes in, so a resumed run sees exactly the same starts. Train accuracy is
read from the logits the loss already computed (no extra forward pass).

Defaults follow REFERENCE.md: FGSM and Fast-FGSM eps 8/255 (Wong et al. 2020), PGD eps 8/255,
step 2/255, 10 steps (Madry et al. 2018), TRADES eps 0.031, step 0.007, 10 steps, beta 6 (Zhang et
al. 2019), transfer-adversary injection PGD eps 16/255 on a fixed source model (seed 000's "AT").
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ... import models as rl_models
from ...attacks import ATTACKS, attack_settings, fast_fgsm, fgsm, pgd, run_attack
from ...defaults import default_step, step_text
from ...errors import CheckpointError, ConfigError, InputError
from .methods import METHODS, Method, StepOutput, check_method_eps


def check_step(method: str, step_size: Optional[float]) -> Optional[float]:
    if step_size is not None and (not math.isfinite(step_size) or step_size <= 0):
        raise ConfigError(f"method {method!r}: step_size must be > 0, got {step_size!r}")
    return step_size


def check_steps(method: str, steps: Optional[int], only: Optional[int] = None,
                hint: str = "") -> Optional[int]:
    if steps is not None and steps < 1:
        raise ConfigError(f"method {method!r}: steps must be >= 1, got {steps}")
    if only is not None and steps != only:
        raise ConfigError(f"method {method!r} takes exactly {only} step, got steps={steps}{hint}")
    return steps


def ce_step(model: torch.nn.Module, x_train: torch.Tensor, y: torch.Tensor) -> StepOutput:
    """Cross-entropy on the inputs the method trains on (model in train mode)."""
    logits = model(x_train)
    return StepOutput(F.cross_entropy(logits, y), logits)


@METHODS.register("fgsm", help="FGSM-AT: train on x + eps*sign(grad), no random start "
                  "(Goodfellow et al. 2015)")
class FGSMTraining(Method):
    name = "fgsm"

    @dataclass(frozen=True)
    class Args:
        eps: float = 8 / 255
        steps: int = 1
        step_size: Optional[float] = None  # fixed at eps; given only to be refused when different

    def __init__(self, args: dict[str, Any], ctx: Any) -> None:
        super().__init__(args, ctx)
        eps = check_method_eps(self.name, self.args.eps)
        check_steps(self.name, self.args.steps, 1, "; use --method pgd for several steps")
        step = check_step(self.name, self.args.step_size)
        if step is not None and not math.isclose(step, eps, rel_tol=1e-6):
            raise ConfigError(f"method 'fgsm' steps exactly eps ({eps:g}), got step_size={step:g};"
                              f" use --method fast-fgsm (random start, step "
                              f"{step_text('fast-fgsm')}) or pgd")

    def loss(self, model, x, y, generator):
        return ce_step(model, fgsm(model, x, y, eps=self.args.eps), y)


@METHODS.register("fast-fgsm", help=f"Fast-FGSM / FGSM-RS: uniform start, one step of "
                  f"{step_text('fast-fgsm')} (Wong et al. 2020)")
class FastFGSMTraining(Method):
    name = "fast-fgsm"

    @dataclass(frozen=True)
    class Args:
        eps: float = 8 / 255
        steps: int = 1
        step_size: Optional[float] = None  # None: the attack's default (DEFAULT_STEP)

    def __init__(self, args: dict[str, Any], ctx: Any) -> None:
        super().__init__(args, ctx)
        check_method_eps(self.name, self.args.eps)
        check_steps(self.name, self.args.steps, 1, "; use --method pgd for several steps")
        check_step(self.name, self.args.step_size)

    def loss(self, model, x, y, generator):
        a = self.args
        x_adv = fast_fgsm(model, x, y, eps=a.eps, step_size=a.step_size, generator=generator)
        return ce_step(model, x_adv, y)


@METHODS.register("pgd", help=f"PGD-AT: k steps of {step_text('pgd')} with random start "
                  "(Madry et al. 2018)")
class PGDTraining(Method):
    name = "pgd"

    @dataclass(frozen=True)
    class Args:
        eps: float = 8 / 255
        steps: int = 10
        step_size: Optional[float] = None  # None: pgd's DEFAULT_STEP (2/255 at eps 8/255)
        random_start: bool = True

    def __init__(self, args: dict[str, Any], ctx: Any) -> None:
        super().__init__(args, ctx)
        check_method_eps(self.name, self.args.eps)
        check_steps(self.name, self.args.steps)
        check_step(self.name, self.args.step_size)

    def loss(self, model, x, y, generator):
        a = self.args
        step = a.step_size if a.step_size is not None else default_step("pgd", a.eps)
        x_adv = pgd(model, x, y, eps=a.eps, step_size=step, steps=a.steps,
                    random_start=a.random_start, generator=generator)
        return ce_step(model, x_adv, y)


@METHODS.register("trades", help="TRADES: CE(f(x), y) + beta * KL(f(x) || f(x')), KL maximised "
                  "from x + 0.001 N(0,1) (Zhang et al. 2019)")
class TRADESTraining(Method):
    name = "trades"

    @dataclass(frozen=True)
    class Args:
        eps: float = 0.031
        steps: int = 10
        step_size: float = 0.007
        beta: float = 6.0

    def __init__(self, args: dict[str, Any], ctx: Any) -> None:
        super().__init__(args, ctx)
        check_method_eps(self.name, self.args.eps)
        check_steps(self.name, self.args.steps)
        check_step(self.name, self.args.step_size)
        if not math.isfinite(self.args.beta) or self.args.beta <= 0:
            raise ConfigError(f"method 'trades': beta must be > 0 (6 in the paper), got "
                              f"{self.args.beta!r}")

    def loss(self, model, x, y, generator):
        a = self.args
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        x_adv = pgd(model, x, None, eps=a.eps, step_size=a.step_size, steps=a.steps,
                    objective="kl", init=x + 0.001 * noise.to(x.device))
        logits = model(x)  # (B, K), train mode; clean and adversarial passes as in the paper's code
        logits_adv = model(x_adv)
        natural = F.cross_entropy(logits, y)
        # batch-mean KL(p(x) || p(x')); the gradient reaches both passes, as in TRADES
        robust = F.kl_div(F.log_softmax(logits_adv.float(), 1), F.log_softmax(logits.float(), 1),
                          reduction="batchmean", log_target=True)
        return StepOutput(natural + a.beta * robust, logits,
                          {"loss_natural": natural.detach(), "loss_robust": robust.detach()})


MIX_DEFAULT = {"replace": 0.5, "inject": 1.0}  # mix=None means this, per mode


@METHODS.register("transfer-adv", help="transfer-adversary training on a fixed --source model "
                  "(seed 000's AT): mode replace swaps a mix fraction of each batch for "
                  "adversaries, mode inject adds them to the batch")
class TransferAdvTraining(Method):
    """Adversaries crafted on a fixed source model, fresh for every mini-batch.

    ``mode="replace"`` (default): the first ``round(mix * B)`` rows of the (shuffled) batch are
    replaced by their adversaries; the model trains on B images. ``mode="inject"``, the SSR
    report's "AT" ("injected back into the training batch"): the adversaries of the first
    ``round(mix * B)`` rows (every row by default) are added, and the model trains on B + k images
    in one forward pass (batch norm sees them together), the loss being the mean cross-entropy
    over all of them. In inject mode ``train_acc`` is read on the clean rows and
    ``train_adv_acc`` on the added adversaries.

    The report's "AT PGD" row: ``attack="pgd", eps=16/255, step_size=0.1, steps=20,
    attack_args={"random_start": False}, mode="inject"`` (its "AT FGSM": ``attack="fgsm"``).
    """

    name = "transfer-adv"

    @dataclass(frozen=True)
    class Args:
        source: Optional[str] = None       # checkpoint of the fixed source model
        attack: str = "pgd"                # any name of robustlab.attacks.ATTACKS
        eps: float = 16 / 255
        steps: Optional[int] = None        # None: the attack's default
        step_size: Optional[float] = None  # None: the attack's default
        mix: Optional[float] = None        # fraction of each batch attacked; None: MIX_DEFAULT
        mode: str = "replace"              # "replace" (swap them in) or "inject" (add them)
        attack_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"random_start": False}
        source_blocks: int = 2             # extractor attacks: blocks of the source used

    @classmethod
    def check_args(cls, a: Any) -> None:
        """Every setting, before any data is loaded: the mode, mix, and the attack's name and
        settings (attack_args included) against the attack's own."""
        if not a.source:
            raise ConfigError("method 'transfer-adv' crafts its adversaries on a fixed source "
                              "model: pass --source CHECKPOINT (e.g. a trained vgg19's "
                              "model.safetensors)")
        if a.mode not in MIX_DEFAULT:
            raise ConfigError(f"method 'transfer-adv': mode must be 'replace' (a mix fraction of "
                              f"each batch is replaced by adversaries) or 'inject' (they are "
                              f"added to the batch), got {a.mode!r}")
        if a.mix is not None and not (isinstance(a.mix, (int, float)) and 0 < a.mix <= 1):
            raise ConfigError(f"method 'transfer-adv': mix is the fraction of each batch "
                              f"attacked (mode {a.mode}), in (0, 1], got {a.mix!r}")
        check_method_eps(cls.name, a.eps)
        check_steps(cls.name, a.steps)
        check_step(cls.name, a.step_size)
        attack_settings(a.attack, **cls.attack_kwargs(a))  # unknown attack or setting: refused

    @staticmethod
    def attack_kwargs(a: Any) -> dict[str, Any]:
        """The settings the attack runs with (its defaults fill the rest)."""
        given = (("steps", a.steps), ("step_size", a.step_size))
        return {"eps": a.eps, **{k: v for k, v in given if v is not None}, **a.attack_args}

    def __init__(self, args: dict[str, Any], ctx: Any) -> None:
        super().__init__(args, ctx)
        a = self.args
        self.check_args(a)
        self.mix = MIX_DEFAULT[a.mode] if a.mix is None else float(a.mix)
        self.entry = ATTACKS.get(a.attack)
        self.settings = self.attack_kwargs(a)
        fields = [f.name for f in dataclasses.fields(attack_settings(a.attack, **self.settings))]
        self.gen_key = "generator" if "generator" in fields else None
        self.attacker = self._load_source(a.source, ctx)

    def _load_source(self, path: str, ctx: Any) -> torch.nn.Module:
        """Load the frozen source and check it takes the training images and classes."""
        try:
            source = rl_models.load(path, kind="classifier")
        except CheckpointError as exc:
            raise CheckpointError(f"--source: {exc}") from None
        source = source.to(ctx.device).eval().requires_grad_(False)
        data = ctx.train_data
        c, h, w = (int(v) for v in data.images.shape[1:])
        k = getattr(source, "num_classes", None)
        if k is not None and k != ctx.num_classes:
            raise InputError(f"--source {path} predicts {k} classes but {data.name} has "
                             f"{ctx.num_classes}; use a source trained on the same dataset")
        probe = data.images[:1].to(ctx.device, torch.float32) / 255  # (1, C, H, W) in [0, 1]
        try:
            with torch.no_grad():
                out = source(probe)
        except Exception as exc:  # a shape mismatch surfaces as any of several errors
            raise InputError(f"--source {path} cannot take {data.name}'s {c}x{h}x{w} images "
                             f"({str(exc).splitlines()[0]}); use a source trained on the same "
                             "dataset") from None
        if out.dim() != 2 or out.shape[1] != ctx.num_classes:
            raise InputError(f"--source {path} outputs shape {tuple(out.shape)} on {data.name}; "
                             f"expected logits for {ctx.num_classes} classes")
        if self.entry.model_role == "extractor":
            return rl_models.feature_extractor(source, self.args.source_blocks)
        return source

    def loss(self, model, x, y, generator):
        b = x.shape[0]
        k = max(1, math.floor(self.mix * b + 0.5))  # attacked rows (the batch is shuffled)
        extra = {self.gen_key: generator} if self.gen_key else {}
        x_adv = run_attack(self.args.attack, self.attacker, x[:k],
                           y[:k] if self.entry.needs_labels else None, **self.settings, **extra)
        x_adv = x_adv.to(x.dtype)  # (k, C, H, W) in [0, 1]
        if self.args.mode == "replace":
            return ce_step(model, torch.cat([x_adv, x[k:]]), y)
        logits = model(torch.cat([x, x_adv]))  # (b + k, K): one pass, the batch grown by k
        loss = F.cross_entropy(logits, torch.cat([y, y[:k]]))  # mean over all b + k rows
        adv_acc = (logits[b:].detach().argmax(1) == y[:k]).float().mean()
        return StepOutput(loss, logits[:b], {"train_adv_acc": adv_acc})
