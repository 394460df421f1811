"""The traffic-sign report's Table I, Figs. 1 and 3-6, the catastrophic-overfitting finding and
the report's claims, rendered from ``results.json`` alone; and the recipe's registration.

Numbers use the report's metric, accuracy on the perturbed inputs ("perturbed accuracy"), with
robust accuracy (right clean and attacked) beside it; every attack is white-box. The settings and
steps are in :mod:`.traffic_signs`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from ..defaults import step_text
from .recipe import Claim, Output
from .render import Cell, Table, line_figure
from .results import Missing, Results
from .traffic_signs import MODELS, SINGLE_STEP, Settings, arm_labels

OVERFIT_GAP = 30.0   # points of FGSM over PGD accuracy that mark the collapse (guards.overfit_gap)
NEAR = 2.0           # "near the standard model's clean accuracy": at most 2 points lower
MAX_SE = 5.0         # a comparison whose standard error exceeds 5 points is not judged
METRIC = ("accuracy on the perturbed inputs (the report's metric), robust accuracy (right "
          "clean and attacked) in brackets")
CURVE_Y = "accuracy on perturbed inputs (%); dashed: robust"


# ---------------------------------------------------------------- reading the results


def perturbed(row: dict) -> float:
    """The report's metric of a sweep row or result (robust accuracy where it is absent)."""
    return row.get("perturbed_acc", row["acc"])


def _clean(res: Results, key: str) -> tuple[float, int]:
    r = res.result(f"clean-{key}")
    return r["clean_acc"], r["n"]


def _point(res: Results, step: str, model: str, value: float) -> dict:
    for r in res.result(step)["rows"]:
        if r["model"] == model and math.isclose(r["value"], value):
            return r
    raise Missing(f"{step} has no point {model} at {value:g}")


def _n(res: Results, step: str) -> int:
    """Test images a sweep scored (its rows say; the settings may say None: all)."""
    return res.result(step)["rows"][0]["n"]


def _cell(res: Results, get: Callable[[], dict], report: float | None = None) -> Cell:
    """A sweep point as perturbed accuracy with robust accuracy beside it."""
    c = res.cell(lambda: perturbed(get()), report)
    robust = None if c.ours is None else 100 * get()["acc"]
    return Cell(c.ours, c.report, c.missing, robust)


def _e255(eps: float) -> str:
    return f"{eps * 255:.3g}/255"


def _se(p: float, n: int) -> float:
    """Standard error of an accuracy p on n images, in points: sqrt(p(1-p)/n)."""
    return 100 * math.sqrt(max(p * (1 - p), 1e-4) / max(n, 1))


def _se_diff(p: float, q: float, n: int, m: int | None = None) -> float:
    return math.hypot(_se(p, n), _se(q, m or n))


# ---------------------------------------------------------------- tables


def _guard(res: Results, key: str) -> str:
    """The overfitting guard's verdict from a training run's metrics lines."""
    if key == "none":
        return "off (standard training)"
    lines = res.result(f"train-{key}")["metrics"]
    flagged = [m["epoch"] for m in lines if m.get("catastrophic_overfitting")]
    last = next((m for m in reversed(lines) if "overfit_pgd_acc" in m), None)
    if last is None:
        return "no guard metrics"
    batch = (f"training batch, epoch {last['epoch']}: FGSM {100 * last['overfit_fgsm_acc']:.1f}%,"
             f" PGD {100 * last['overfit_pgd_acc']:.1f}%")
    restored = [m["restored_epoch"] for m in lines if "restored_epoch" in m]
    verdict = (f"catastrophic overfitting flagged in epoch {', '.join(map(str, flagged))}"
               if flagged else "not flagged")
    return f"{verdict} ({batch})" + (f"; restored epoch {restored[0]}" if restored else "")


def table1(res: Results, s: Settings, _fig: Path) -> Table:
    rows = []
    for key, (label, method, report) in MODELS.items():
        clean = res.cell(lambda k=key: _clean(res, k)[0], report)
        try:
            guard = _guard(res, key)
        except Missing as m:
            guard = f"n/a ({m})"
        rows.append((f"{s.model}, {label}", [clean, guard]))
    eps = _e255(s.fgsm_eps)
    return Table("table1", "Table I: test clean accuracy", ["clean accuracy", "overfitting guard"],
                 rows, "accuracy on clean test images (no attack: perturbed and robust accuracy "
                 "are both this number)",
                 f"none for the clean column; the guard attacks a fixed training batch "
                 f"white-box (FGSM and PGD-{s.guard_steps} at the method's eps: {eps} for "
                 f"FGSM/FastFGSM)",
                 [f"{s.model} on {s.dataset}; n = {s.n_clean or 'the whole test split'}.",
                  "FGSM and FastFGSM train with guards.overfit_action=warn: an epoch where FGSM "
                  "beats PGD on the training batch by more than 30 points (or PGD falls by 20) "
                  "is marked and training goes on, as in the report; model.safetensors is the "
                  "last epoch."])


def overfitting(res: Results, s: Settings, _fig: Path) -> Table:
    eps = s.fgsm_eps
    cols = ["clean", f"FGSM {_e255(eps)}", f"PGD-{s.pgd_steps} {_e255(eps)}",
            "FGSM - PGD (points)", "finding"]
    rows = []
    for key, (label, _, _) in MODELS.items():
        def get(step, k=label):
            return lambda: _point(res, step, k, eps)
        fg, pg = _cell(res, get("stress-fgsm-eps")), _cell(res, get("stress-pgd-eps"))
        clean = res.cell(lambda k=label: _point(res, "stress-pgd-eps", k, 0.0)["acc"])
        if fg.ours is None or pg.ours is None:
            rows.append((label, [clean, fg, pg, "-", "-"]))
            continue
        gap = fg.ours - pg.ours
        se = _se_diff(fg.ours / 100, pg.ours / 100, _n(res, "stress-pgd-eps"))
        finding = ("collapses under PGD (catastrophic overfitting)" if gap > OVERFIT_GAP
                   else "no collapse") + f" (SE of the gap {se:.1f})"
        rows.append((label, [clean, fg, pg, Cell(gap), finding]))
    return Table("overfitting", "Catastrophic overfitting: FGSM-trained models resist FGSM but "
                 "not PGD", cols, rows, METRIC,
                 f"white-box on each model; PGD step {step_text('pgd')}, random start, early "
                 f"stop; the first {s.n or 'all'} test images",
                 [f"The finding: FGSM accuracy above PGD accuracy by more than {OVERFIT_GAP:g} "
                  "points at the training budget (the report: FGSM/FastFGSM 'perform well on "
                  "FGSM type attacks but terribly bad on PGD').",
                  "Clean: the eps-0 point of the PGD sweep (robust accuracy there is clean "
                  "accuracy)."])


# ---------------------------------------------------------------- figures


def _curves(res: Results, step: str, scale: float) -> tuple[dict, dict]:
    """Curves of a sweep (perturbed solid, robust dashed, one colour per model) and styles."""
    curves: dict[str, list] = {}
    styles: dict[str, dict] = {}
    models: list[str] = []
    for r in res.result(step)["rows"]:
        if r["model"] not in models:
            models.append(r["model"])
        c = f"C{models.index(r['model'])}"
        curves.setdefault(r["model"], []).append((r["value"] * scale, 100 * perturbed(r)))
        curves.setdefault(f"{r['model']} (robust)", []).append((r["value"] * scale,
                                                                100 * r["acc"]))
        styles[r["model"]] = {"color": c}
        styles[f"{r['model']} (robust)"] = {"color": c, "linestyle": "--", "alpha": 0.5}
    return curves, styles


def _sweep_figure(step: str, name: str, title: Callable[[Settings], str], xlabel: str,
                  scale: float) -> Callable:
    def render(res: Results, s: Settings, fig: Path) -> str:
        curves, styles = _curves(res, step, scale)
        return line_figure(fig / f"{name}.png", curves, xlabel=xlabel, ylabel=CURVE_Y,
                           title=title(s), styles=styles)
    return render


def fig1(res: Results, s: Settings, fig: Path) -> str:
    from ..evaluation import load_adversarial
    from ..viz import save_image_rows

    r = res.result("fig1-fgsm-example")
    x_adv, _, x, _ = load_adversarial(res.path("fig1-fgsm-example", "adv0.safetensors"))
    delta = (0.5 + (x_adv - x) / (2 * s.fgsm_eps)).clamp(0, 1)  # -eps..eps shown as 0..1
    right = (r.get("perturbed_acc") or {}).get("fgsm", r["acc"]["fgsm"])
    title = (f"FGSM {_e255(s.fgsm_eps)}, white-box, standard model: {100 * r['clean_acc']:.0f}%"
             f" clean, {100 * right:.0f}% adversarial right")
    return str(save_image_rows([x, delta, x_adv], fig / "fig1.png", title=title,
                               labels=["clean", "perturbation", "adversarial"]))


# ---------------------------------------------------------------- claims


def _verdict(value: float, bar: float, se: float) -> str:
    """"holds" when ``value`` clears ``bar`` by more than 2 SE, "does not hold" when it falls
    short by more than 2 SE, else (and whenever SE > MAX_SE) "cannot be judged here"."""
    if se > MAX_SE or abs(value - bar) <= 2 * se:
        return "cannot be judged here"
    return "holds" if value > bar else "does not hold"


def _all(verdicts: list[str]) -> str:
    if "does not hold" in verdicts:
        return "does not hold"
    return "holds" if all(v == "holds" for v in verdicts) else "cannot be judged here"


def _stress(res: Results, step: str, key: str, eps: float) -> float:
    return perturbed(_point(res, step, MODELS[key][0], eps))


def near_clean(res: Results, s: Settings) -> tuple[str, str]:
    base, n = _clean(res, "none")
    verdicts, parts = [], []
    for key in SINGLE_STEP:
        p, m = _clean(res, key)
        d, se = 100 * (p - base), _se_diff(p, base, m, n)
        verdicts.append(_verdict(d, -NEAR, se))
        parts.append(f"{MODELS[key][0]} {100 * p:.1f}% ({d:+.1f} points, SE {se:.1f})")
    return _all(verdicts), (f"clean accuracy against the standard model's {100 * base:.1f}%: "
                            + ", ".join(parts) + f"; 'near' = no more than {NEAR:g} points "
                            "lower")


def trades_costs(res: Results, s: Settings) -> tuple[str, str]:
    (base, n), (p, m) = _clean(res, "none"), _clean(res, "trades")
    d, se = 100 * (base - p), _se_diff(p, base, m, n)
    return _verdict(d, 0.0, se), (f"TRADES {100 * p:.1f}% against standard {100 * base:.1f}% "
                                  f"clean: {d:+.1f} points lost (the report: 16.1), SE {se:.1f}")


def collapse(res: Results, s: Settings) -> tuple[str, str]:
    verdicts, parts = [], []
    for key in SINGLE_STEP:
        f = _stress(res, "stress-fgsm-eps", key, s.fgsm_eps)
        p = _stress(res, "stress-pgd-eps", key, s.fgsm_eps)
        gap, se = 100 * (f - p), _se_diff(f, p, _n(res, "stress-pgd-eps"))
        verdicts.append(_verdict(gap, OVERFIT_GAP, se))
        parts.append(f"{MODELS[key][0]}-trained: FGSM {100 * f:.1f}%, PGD {100 * p:.1f}% (gap "
                     f"{gap:.1f}, SE {se:.1f})")
    return _all(verdicts), (f"perturbed accuracy at eps {_e255(s.fgsm_eps)}: " + "; ".join(parts)
                            + f"; collapse = FGSM above PGD by more than {OVERFIT_GAP:g} points")


def trades_pgd(res: Results, s: Settings) -> tuple[str, str]:
    best = None  # the eps where TRADES' lead over the better single-step model is clearest
    for e in (e for e in s.stress_eps if e > 0):
        t = _stress(res, "stress-pgd-eps", "trades", e)
        o = max(_stress(res, "stress-pgd-eps", k, e) for k in SINGLE_STEP)
        d, se = 100 * (t - o), _se_diff(t, o, _n(res, "stress-pgd-eps"))
        if best is None or d - 2 * se > best[1] - 2 * best[2]:
            best = (e, d, se)
    if best is None:
        raise Missing("stress_eps has no eps > 0")
    e, d, se = best
    return _verdict(d, 0.0, se), (f"clearest at eps {_e255(e)}: TRADES {d:+.1f} points over the "
                                  f"better single-step model under PGD-{s.pgd_steps} (SE {se:.1f})")


def fgsm_beats_trades(res: Results, s: Settings) -> tuple[str, str]:
    t = _stress(res, "stress-fgsm-eps", "trades", s.fgsm_eps)
    o = min(_stress(res, "stress-fgsm-eps", k, s.fgsm_eps) for k in SINGLE_STEP)
    d, se = 100 * (o - t), _se_diff(o, t, _n(res, "stress-fgsm-eps"))
    return _verdict(d, 0.0, se), (f"FGSM at {_e255(s.fgsm_eps)}: the weaker single-step model "
                                  f"{100 * o:.1f}% against TRADES {100 * t:.1f}% ({d:+.1f} "
                                  f"points, SE {se:.1f})")


def acl_gain(res: Results, s: Settings) -> tuple[str, str]:
    with_pre, without = arm_labels(s)
    diffs, ses = [], []
    for e in (e for e in s.acl_eps if e > 0):
        a = perturbed(_point(res, "acl-pgd-eps", with_pre, e))
        b = perturbed(_point(res, "acl-pgd-eps", without, e))
        diffs.append(100 * (a - b))
        ses.append(_se_diff(a, b, _n(res, "acl-pgd-eps")))
    d, se = sum(diffs) / len(diffs), sum(ses) / len(ses)  # SE of the mean as if fully correlated
    return _verdict(d, 5.0, se), (
        f"mean PGD-{s.pgd_steps} gain over eps {', '.join(_e255(e) for e in s.acl_eps if e > 0)}:"
        f" {d:+.1f} points (per eps {', '.join(f'{x:+.1f}' for x in diffs)}; SE {se:.1f}; "
        f"{'' if d > 2 * se else 'not '}clearly above 0); holds above 5 points (half the "
        "report's ~10)")


CLAIMS = (
    ("FGSM and FastFGSM adversarial training keep clean accuracy near the standard model's "
     "(Table I: 97.49 and 97.7 against 96.64)", near_clean),
    ("TRADES costs clean accuracy (Table I: 80.5 against 96.64)", trades_costs),
    ("FGSM- and FastFGSM-trained models resist FGSM but collapse under PGD (catastrophic "
     "overfitting, Figs. 3-5)", collapse),
    ("TRADES makes the model more robust to PGD than FGSM/FastFGSM for some eps (Fig. 4)",
     trades_pgd),
    ("FGSM and FastFGSM models do better than TRADES against FGSM (Fig. 3)", fgsm_beats_trades),
    ("{method} contrastive pre-training gives about 10 points more PGD robustness than no "
     "pre-training over a range of eps (Fig. 6)", acl_gain),
)


def claims(res: Results, s: Settings) -> list[Claim]:
    """Each claim of the report judged from the numbers: a verdict needs the difference to clear
    its bar by 2 standard errors (SE = sqrt(p(1-p)/n) per accuracy, in quadrature for a
    difference); a comparison with an SE above MAX_SE points is not judged."""
    out = []
    for text, test in CLAIMS:
        try:
            verdict, why = test(res, s)
            why += "; SE = sqrt(p(1-p)/n) per accuracy, a verdict needs a margin of 2 SE"
        except Missing as m:
            verdict, why = "cannot be judged here", str(m)
        except (KeyError, IndexError, TypeError, ZeroDivisionError) as exc:
            verdict, why = "cannot be judged here", f"not in the results ({exc!r})"
        out.append(Claim(text.format(method=s.pretrain_method.upper()), verdict, why))
    return out


# ---------------------------------------------------------------- the recipe


def _out(name: str, title: str, kind: str, needs: list[str] | Callable, render,
         about: str = "") -> Output:
    need = needs if callable(needs) else (lambda s, n=tuple(needs): list(n))
    return Output(name, title, kind, need, render, about)


TRAINED = [f"train-{k}" for k in MODELS]
OUTPUTS = {o.name: o for o in (
    _out("fig1", "Fig. 1: clean image, perturbation and adversarial image (FGSM)", "figure",
         ["fig1-fgsm-example"], fig1, "White-box FGSM at the training eps on the standard "
         "model; the perturbation is drawn as 0.5 + (x_adv - x) / (2 eps)."),
    _out("table1", "Table I: test clean accuracy", "table",
         TRAINED + [f"clean-{k}" for k in MODELS], table1),
    _out("fig3", "Fig. 3: FGSM accuracy against eps", "figure", ["stress-fgsm-eps"],
         _sweep_figure("stress-fgsm-eps", "fig3", lambda s: "Fig. 3: FGSM against eps "
                       "(white-box)", "eps (/255)", 255)),
    _out("fig4", "Fig. 4: PGD accuracy against eps", "figure", ["stress-pgd-eps"],
         _sweep_figure("stress-pgd-eps", "fig4", lambda s: f"Fig. 4: PGD-{s.pgd_steps} "
                       f"against eps (white-box, step {step_text('pgd')})", "eps (/255)", 255)),
    _out("fig5", "Fig. 5: PGD accuracy against the number of steps", "figure",
         ["stress-pgd-steps"],
         _sweep_figure("stress-pgd-steps", "fig5", lambda s: f"Fig. 5: PGD at eps "
                       f"{_e255(s.steps_eps)} against steps (white-box, step {step_text('pgd')})",
                       "PGD steps", 1)),
    _out("fig6", "Fig. 6: contrastive pre-training against none, PGD accuracy against eps",
         "figure", ["acl-pgd-eps"],
         _sweep_figure("acl-pgd-eps", "fig6", lambda s: f"Fig. 6: {s.pretrain_method.upper()}"
                       f" pre-training vs none, PGD-{s.pgd_steps} (white-box)", "eps (/255)",
                       255), "Both arms: the same plain fine-tuning (data, model, epochs, "
         "seed); one starts from the pre-trained encoder."),
    _out("overfitting", "Catastrophic overfitting of FGSM adversarial training", "table",
         ["stress-fgsm-eps", "stress-pgd-eps"], overfitting),
)}

NOTES = (
    "Every number names its metric and threat model; every attack is white-box. The report's "
    "numbers are in brackets in the tables.",
    "The report's data is a Kaggle set of about 73k 32x32 signs (50k/10k/13k); the paper preset "
    "uses the official GTSRB (39,209 train with 10% held out for validation, 12,630 test) and "
    "torchvision's ImageNet ResNet18 (the weights must be cached or downloadable).",
    "The quick preset runs on 2 CPU cores: Fashion-MNIST and a CIFAR-style ResNet18 at width "
    "0.25 trained from scratch (no ImageNet weights are reachable offline), so compare shapes "
    "and orderings with the report, not levels.",
    f"PGD is robustlab's: step {step_text('pgd')}, uniform random start, one restart, early "
    "stop (each image keeps its first fooling iterate: never weaker). TRADES' inner "
    "maximisation starts from x + 0.001 N(0, 1) clamped to [0, 1] (the reference code clamps "
    "after the first step).")


def _register() -> None:
    from . import traffic_signs
    from .recipe import RECIPES, Recipe

    RECIPES.register("traffic-signs", help="seed 003: FGSM, FastFGSM and TRADES adversarial "
                     "training and A2S pre-training of a traffic-sign ResNet18 (Table I, Figs. "
                     "1, 3-6, catastrophic overfitting)")(Recipe(
        name="traffic-signs", title="Robust traffic-sign classifiers (seed 003)",
        report="003_f3f7118bcd1e3c6b.txt", settings=Settings, steps=traffic_signs.steps,
        outputs=OUTPUTS, claims=claims, notes=NOTES))


_register()
