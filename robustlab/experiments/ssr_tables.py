"""The SSR purifier report's tables, figures and claims, rendered from ``results.json`` alone.

Numbers that reproduce the report use its metric (accuracy on the perturbed inputs, "perturbed
accuracy") under its threat model (attacks crafted on VGG19: white-box on VGG19, transfer on the
others, the purifier never attacked: gray-box); robust accuracy (right clean and attacked) is
shown beside them. The adaptive attacks (white-box through the whole pipeline, BPDA, AutoAttack)
are robustlab's and use robust accuracy.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable

from ..defaults import step_text
from .recipe import Claim, Output
from .render import Cell, Table, line_figure
from .results import Missing, Results
from .ssr_purifier import CLASSIFIERS, DEFENDED, PURIFIERS, Settings

NAMES = {"vgg16": "VGG16", "vgg19": "VGG19", "resnet18": "ResNet18"}
REPORT_T3 = {"b3": {"vgg16": (84.45, 69.43), "vgg19": (84.78, 75.16), "resnet18": (85.22, 71.92)},
             "nrp": {"vgg16": (67.06, 69.04), "vgg19": (68.79, 71.35),
                     "resnet18": (74.51, 74.52)},
             "none": {"vgg16": (92.06, 11.17), "vgg19": (92.43, 9.87),
                      "resnet18": (87.99, 13.80)}}
REPORT_T4 = {"b3": (85.22, 66.00, 34.02, 54.10, 29.49),
             "at-pgd": (60.21, 58.46, 55.72, 56.30, 53.89)}
REPORT_T6 = {"a-l1": (60.39, 67.30), "b1": (72.36, 76.52), "b2": (70.58, 75.91),
             "b3": (75.16, 75.67)}
REPORT_FIG4A = [(2, 67.0), (4, 63.5), (8, 54.0), (16, 29.5), (32, 9.0)]
PERTURBED = "perturbed accuracy (the report's metric), robust accuracy in brackets"


def _score(res: Results, examples: str, pipeline: str, key: str = "perturbed_acc") -> float:
    for r in res.result("score-crafted")["rows"]:
        if r["examples"] == examples and r["model"] == pipeline:
            return r[key]
    raise Missing(f"no score of {examples} on {pipeline}")


def _scored(res: Results, examples: str, pipeline: str, report: float | None = None) -> Cell:
    c = res.cell(lambda: _score(res, examples, pipeline), report)
    try:
        robust = 100 * _score(res, examples, pipeline, "robust_acc")
    except (Missing, KeyError):
        robust = None
    return Cell(c.ours, c.report, c.missing, robust)


def _clean(res: Results, pipeline: str, report: float | None = None) -> Cell:
    return res.cell(lambda: _score(res, "fd16", pipeline, "clean_acc"), report)


def _eval(res: Results, step: str, label: str, key: str = "acc") -> float:
    out = res.result(step)
    return out[key][label] if key != "clean_acc" else out["clean_acc"]


def table1(res: Results, s: Settings, _fig: Path) -> Table:
    report = {"fd16": (11.17, 9.87, 13.80)}
    rows = [(f"FD from {src}", [_scored(res, ex, f"none-{m}", report.get(ex, (None,) * 3)[i])
                                for i, m in enumerate(CLASSIFIERS)])
            for src, ex in (("VGG16", "fd16-vgg16"), ("VGG19", "fd16"))]
    return Table("table1", "Table 1: feature distortion (2 blocks, eps 16/255) across classifiers",
                 [NAMES[m] for m in CLASSIFIERS], rows, PERTURBED,
                 "white-box on the extractor's own classifier, transfer on the others")


def table2(res: Results, s: Settings, _fig: Path) -> Table:
    report = {"vgg19": (9.87, 6.39, 3.48), "resnet18": (11.17, 17.87, 10.87)}
    rows = []
    for i, (label, ex) in enumerate((("FD", "fd16"), ("FGSM", "fgsm16"),
                                     ("PGD (report's: step 0.1, 20 it.)", "pgd16-report"))):
        rows.append((label, [_scored(res, ex, f"none-{m}", report[m][i]) for m in DEFENDED]))
    return Table("table2", "Table 2: FD vs FGSM vs PGD at eps 16/255, crafted on VGG19",
                 [NAMES[m] for m in DEFENDED], rows, PERTURBED,
                 "white-box on VGG19, transfer on ResNet18")


def table3(res: Results, s: Settings, _fig: Path) -> Table:
    cols = [f"{NAMES[m]} {what}" for m in CLASSIFIERS for what in ("clean", "FD-16")]
    rows = []
    for key, label in (("none", "no defence"), ("nrp", "NRP"), ("b3", "ours (B3)")):
        cells = []
        for m in CLASSIFIERS:
            clean_r, fd_r = REPORT_T3[key][m]
            cells += [_clean(res, f"{key}-{m}", clean_r), _scored(res, "fd16", f"{key}-{m}", fd_r)]
        rows.append((label, cells))
    return Table("table3", "Table 3: clean and feature-distortion accuracy with each purifier",
                 cols, rows, PERTURBED,
                 "gray-box: FD crafted on VGG19's first 2 blocks, the purifier never attacked")


def table4(res: Results, s: Settings, _fig: Path) -> Table:
    cols = ["clean", "FGSM 8", "FGSM 16", "PGD 8", "PGD 16"]
    rows = []
    for m in ("resnet18", "vgg19"):
        for key, label in (("none", "no defence"), ("at-fgsm", "AT FGSM"), ("at-pgd", "AT PGD"),
                           ("nrp", "NRP"), ("b3", "ours (B3)")):
            pipe = f"{key}-{m}" if key in ("none", "nrp", "b3") else f"{key}-{m}"
            rep = REPORT_T4.get(key, (None,) * 5) if m == "resnet18" else (None,) * 5
            cells = [_clean(res, pipe, rep[0])]
            cells += [_scored(res, ex, pipe, rep[i + 1]) for i, ex in
                      enumerate(("fgsm8", "fgsm16", "pgd8-report", "pgd16-report"))]
            rows.append((f"{NAMES[m]}: {label}", cells))
    return Table("table4", "Table 4: defences against FGSM and PGD crafted on VGG19 (the report's "
                 "setting)", cols, rows, PERTURBED,
                 "white-box on undefended VGG19, transfer on ResNet18 and the AT models, gray-box "
                 "for the purifiers (never attacked); PGD is the report's (step 0.1, 20 it., no "
                 "random start)")


def table4_adaptive(res: Results, s: Settings, _fig: Path) -> Table:
    cols = ["clean", "FGSM 8 wb", "FGSM 16 wb", "PGD 8 wb", "PGD 16 wb", "PGD 8 BPDA",
            "PGD 16 BPDA", "APGD-CE+T 8", "warnings"]
    rows = []
    for m in DEFENDED:
        for key, label in (("none", "no defence"), ("at-fgsm", "AT FGSM"), ("at-pgd", "AT PGD"),
                           ("nrp", "NRP"), ("b3", "ours (B3)")):
            step = f"whitebox-{key}-{m}"
            cells = [res.cell(lambda st=step: _eval(res, st, "", "clean_acc"))]
            for label_ in ("fgsm8@white-box", "fgsm16@white-box", "pgd8@white-box",
                           "pgd16@white-box", "pgd8@bpda", "pgd16@bpda"):
                has = key in ("nrp", "b3") or "white-box" in label_
                cells.append(res.cell(lambda st=step, lb=label_: _eval(res, st, lb))
                             if has else "-")
            aa = f"autoattack-{key}-{m}"
            cells.append(res.cell(lambda st=aa: _eval(res, st, "apgd-ce+apgd-t"))
                         if m == "resnet18" and key in ("none", "at-pgd", "nrp", "b3") else "-")
            try:
                cells.append(str(len(res.result(step).get("warnings", []))))
            except Missing:
                cells.append("-")
            rows.append((f"{NAMES[m]}: {label}", cells))
    return Table("table4-adaptive", "Table 4, adaptive: the same defences attacked through the "
                 "whole pipeline (beyond the report)", cols, rows,
                 "robust accuracy (right clean and attacked)",
                 f"white-box (wb) through purifier and classifier, BPDA, AutoAttack; PGD-"
                 f"{s.pgd_steps} step {step_text('pgd')} with random start; warnings: "
                 f"gradient-masking checks (incl. PGD at eps {s.check_large_eps})")


def table5(res: Results, s: Settings, _fig: Path) -> Table:
    report = {"vgg16": 92.06, "vgg19": 92.43, "resnet18": 87.99}
    rows = [(NAMES[m], [_clean(res, f"none-{m}", report[m])]) for m in CLASSIFIERS]
    notes = []
    if s.imagenet_vgg16_epochs:
        rows.append(("VGG16, ImageNet transfer at 224x224",
                     [res.cell(lambda: res.result("clean-vgg16-imagenet")["clean_acc"])]))
    else:
        notes.append("The report's 224x224 ImageNet-transfer VGG16 is built by the paper preset "
                     "only (imagenet_vgg16_epochs 0 here).")
    return Table("table5", "Table 5: classifiers' clean test accuracy", ["clean"], rows,
                 "accuracy", "none (clean images)", notes)


def table6(res: Results, s: Settings, _fig: Path) -> Table:
    rows = [(PURIFIERS[k], [_scored(res, "fd16", f"{k}-{m}", REPORT_T6[k][i])
                            for i, m in enumerate(DEFENDED)]) for k in ("a-l1", "b1", "b2", "b3")]
    return Table("table6", "Table 6: ablation of architecture and losses under FD-16",
                 [NAMES[m] for m in DEFENDED], rows, PERTURBED,
                 "gray-box: FD crafted on VGG19's first 2 blocks")


def fig2(res: Results, s: Settings, fig: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    attacks = (("FD", "fd16"), ("FGSM", "fgsm16"), ("PGD", "pgd16-report"))
    figure, ax = plt.subplots(figsize=(5.6, 3.6))
    for j, m in enumerate(DEFENDED):
        clean = _score(res, "fd16", f"none-{m}", "clean_acc")
        drops = [100 * (clean - _score(res, ex, f"none-{m}")) for _, ex in attacks]
        ax.bar([i + 0.38 * j for i in range(3)], drops, width=0.36, label=NAMES[m])
    ax.set_xticks([i + 0.19 for i in range(3)], [a for a, _ in attacks])
    ax.set_ylabel("clean - perturbed accuracy (points)")
    ax.set_title("Fig. 2: accuracy drop at eps 16/255, crafted on VGG19", fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    fig.mkdir(parents=True, exist_ok=True)
    with atomic_path(fig / "fig2.png") as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    return str(fig / "fig2.png")


def _copy(src: str | None, dst: Path) -> str:
    if not src or not Path(src).is_file():
        raise Missing(f"image {src} not found")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return str(dst)


def fig3(res: Results, s: Settings, fig: Path) -> str:
    return _copy(res.result("purifier-b3").get("grid"), fig / "fig3.png")


def fig5(res: Results, s: Settings, fig: Path) -> str:
    return _copy(res.result("grid-per-class")["grid"], fig / "fig5.png")


def _curve(res: Results, step: str, scale: float = 1.0) -> list[tuple[float, float]]:
    """A sweep's points in the report's metric (perturbed accuracy, %)."""
    return [(r["value"] * scale, 100 * r.get("perturbed_acc", r["acc"]))
            for r in res.result(step)["rows"]]


def _curves(res: Results, steps: dict[str, str], scale: float) -> dict:
    out = {}
    for label, step in steps.items():
        try:
            out[label] = _curve(res, step, scale)
        except Missing:
            continue
    return out


def fig4a(res: Results, s: Settings, fig: Path) -> str:
    curves = _curves(res, {"B3 gray-box": "sweep-eps-b3-gray-box",
                           "B3 white-box": "sweep-eps-b3-white-box",
                           "NRP gray-box": "sweep-eps-nrp-gray-box",
                           "NRP white-box": "sweep-eps-nrp-white-box"}, 255)
    try:
        for r in res.result("sweep-eps-bare")["rows"]:
            curves.setdefault(f"{r['model']} (white-box)", []).append(
                (r["value"] * 255, 100 * r.get("perturbed_acc", r["acc"])))
    except Missing:
        pass
    curves["report: purifier"] = REPORT_FIG4A
    return line_figure(fig / "fig4a.png", curves, xlabel="eps (/255)",
                       title=f"Fig. 4a: ResNet18, PGD-{s.pgd_steps} against eps (perturbed accuracy)",
                       styles={"report: purifier": {"linestyle": "--", "color": "grey"}})


def fig4b(res: Results, s: Settings, fig: Path) -> str:
    curves = _curves(res, {"B3 gray-box": "sweep-steps-b3-gray-box",
                           "B3 white-box": "sweep-steps-b3-white-box"}, 1)
    curves["report: purifier"] = [(v, 54.0) for v in s.sweep_steps]
    return line_figure(fig / "fig4b.png", curves, xlabel="PGD steps",
                       title="Fig. 4b: ResNet18 + B3, PGD at eps 8/255 against steps "
                             "(perturbed accuracy)",
                       styles={"report: purifier": {"linestyle": "--", "color": "grey"}})


def fig6(res: Results, s: Settings, fig: Path) -> str:
    lines = res.result("purifier-b3")["metrics"]
    curves = {"MSE(G(x'), x) x100 (train)": [(m["epoch"], 100 * m["mse_purified"])
                                              for m in lines if "mse_purified" in m],
              "FD accuracy with B3 (%)": [(m["epoch"], 100 * m["fd_acc_purified"])
                                          for m in lines if "fd_acc_purified" in m]}
    return line_figure(fig / "fig6.png", curves, xlabel="epoch", ylabel="value",
                       title="Fig. 6: B3's distance loss and robust accuracy over training")


def _se(p: float, n: int) -> float:
    return 100 * math.sqrt(max(p * (1 - p), 1e-4) / max(n, 1))


def _n_scored(res: Results) -> int:
    return res.result("score-crafted")["rows"][0]["n"]


def _transfer(res: Results, s: Settings) -> tuple[str, str]:
    drops = {m: _score(res, "fd16", f"none-{m}", "clean_acc") - _score(res, "fd16", f"none-{m}")
             for m in ("vgg16", "resnet18")}
    ok = all(d > 0.2 for d in drops.values())
    return ("holds" if ok else "does not hold", "accuracy drop of FD from VGG19: " + ", ".join(
        f"{NAMES[m]} {100 * d:.1f} points" for m, d in drops.items()))


def _restores(res: Results, s: Settings) -> tuple[str, str]:
    n = _n_scored(res)
    a, b = _score(res, "fd16", "b3-resnet18"), _score(res, "fd16", "none-resnet18")
    se = _se(a, n)
    return ("holds" if 100 * (a - b) > 2 * se else "does not hold",
            f"FD-16 on ResNet18: {100 * a:.1f}% with B3 vs {100 * b:.1f}% without "
            f"(SE {se:.1f}, n {n})")


def _beats(other: str, ex: str, what: str) -> Callable[[Results, Settings], tuple[str, str]]:
    """The test that B3 beats defence ``other`` on ResNet18 under the examples ``ex``."""
    def test(res: Results, s: Settings) -> tuple[str, str]:
        n = _n_scored(res)
        a, b = _score(res, ex, "b3-resnet18"), _score(res, ex, f"{other}-resnet18")
        se, diff = _se(a, n), 100 * (a - b)
        verdict = "holds" if diff > 2 * se else ("does not hold" if diff < -2 * se
                                                 else "cannot be judged here")
        return verdict, (f"{what} on ResNet18: B3 {100 * a:.1f}% vs {other} {100 * b:.1f}% "
                         f"(SE {se:.1f}, n {n}; a difference within 2 SE is not judged)")
    return test


def _whitebox(res: Results, s: Settings) -> tuple[str, str]:
    gray = _score(res, "pgd16", "b3-resnet18", "robust_acc")
    white = _eval(res, "whitebox-b3-resnet18", "pgd16@white-box")
    return ("holds" if white >= gray - 0.05 else "does not hold",
            f"PGD-{s.pgd_steps} eps 16 robust accuracy of B3 + ResNet18: gray-box "
            f"{100 * gray:.1f}%, white-box through the purifier {100 * white:.1f}%")


def _flat(res: Results, s: Settings) -> tuple[str, str]:
    pts = _curve(res, "sweep-steps-b3-gray-box")
    spread = max(p[1] for p in pts) - min(p[1] for p in pts)
    se = _se(pts[0][1] / 100, s.n_sweep)
    return ("holds" if spread <= 2 * se else "does not hold",
            f"gray-box accuracy over {len(pts)} step counts varies by {spread:.1f} points "
            f"(SE {se:.1f})")


def _best_preset(res: Results, s: Settings) -> tuple[str, str]:
    fd = {k: _score(res, "fd16", f"{k}-resnet18") for k in ("a-l1", "b1", "b2", "b3")}
    best = max(fd, key=fd.get)
    se = _se(fd["b3"], _n_scored(res))
    close = 100 * (fd[best] - fd["b3"]) <= 2 * se
    return ("holds" if close else "does not hold", "FD-16 on ResNet18: " + ", ".join(
        f"{PURIFIERS[k]} {100 * v:.1f}%" for k, v in fd.items()) + f" (SE {se:.1f})")


CLAIMS = (
    ("Feature distortion crafted on VGG19 transfers to VGG16 and ResNet18 (Table 1)", _transfer),
    ("The purifier restores accuracy under feature distortion (Table 3)", _restores),
    ("The purifier beats NRP under feature distortion (Table 3)", _beats("nrp", "fd16", "FD-16")),
    ("The purifier beats adversarial training (AT PGD) under the report's PGD at eps 16 "
     "(Table 4)", _beats("at-pgd", "pgd16-report", "report's PGD eps 16")),
    ("The purifier's robustness survives an attacker who differentiates through it (not "
     "claimed by the report; the field's standard test)", _whitebox),
    ("More PGD iterations do not lower the purified accuracy (Fig. 4b)", _flat),
    ("B + perceptual + L2 (B3) is the best of the ablation presets (Table 6)", _best_preset),
)


def claims(res: Results, s: Settings) -> list[Claim]:
    """Each claim of CLAIMS judged from the numbers (a claim whose numbers are missing "cannot
    be judged here")."""
    out = []
    for text, test in CLAIMS:
        try:
            verdict, why = test(res, s)
        except Missing as m:
            verdict, why = "cannot be judged here", str(m)
        out.append(Claim(text, verdict, why))
    return out


def _out(name: str, title: str, kind: str, needs: list[str], render, about: str = "") -> Output:
    return Output(name, title, kind, lambda s, n=tuple(needs): list(n), render, about)


SCORE = ["score-crafted"]
WHITEBOX = [f"whitebox-{k}-{m}" for m in DEFENDED
            for k in ("none", "at-fgsm", "at-pgd", "nrp", "b3")]
AUTOATTACK = [f"autoattack-{k}-resnet18" for k in ("none", "at-pgd", "nrp", "b3")]
OUTPUTS = {o.name: o for o in (
    _out("table1", "Table 1: feature-distortion transfer matrix", "table", SCORE, table1),
    _out("table2", "Table 2: FD vs FGSM vs PGD from VGG19", "table", SCORE, table2),
    _out("table3", "Table 3: purifiers under feature distortion", "table", SCORE, table3),
    _out("table4", "Table 4: defences against FGSM and PGD (the report's setting)", "table",
         SCORE, table4),
    _out("table4-adaptive", "Table 4, adaptive attacks (beyond the report)", "table",
         WHITEBOX + AUTOATTACK, table4_adaptive),
    Output("table5", "Table 5: classifier accuracies", "table",
           lambda s: SCORE + (["clean-vgg16-imagenet"] if s.imagenet_vgg16_epochs else []),
           table5),
    _out("table6", "Table 6: ablation", "table", SCORE, table6),
    _out("fig2", "Fig. 2: accuracy difference under FD, FGSM and PGD", "figure", SCORE, fig2),
    _out("fig3", "Fig. 3: perturbed / purified / clean (B3, last training epoch)", "figure",
         ["purifier-b3"], fig3),
    _out("fig4a", "Fig. 4a: accuracy against eps", "figure",
         ["sweep-eps-bare", "sweep-eps-b3-gray-box", "sweep-eps-b3-white-box",
          "sweep-eps-nrp-gray-box", "sweep-eps-nrp-white-box"], fig4a),
    _out("fig4b", "Fig. 4b: accuracy against PGD steps", "figure",
         ["sweep-steps-b3-gray-box", "sweep-steps-b3-white-box"], fig4b),
    _out("fig5", "Fig. 5: one image per class", "figure", ["grid-per-class"], fig5),
    _out("fig6", "Fig. 6: B3 over training", "figure", ["purifier-b3"], fig6),
)}


def _register() -> None:
    from . import ssr_purifier
    from .recipe import RECIPES, Recipe

    RECIPES.register("ssr-purifier", help="seed 000: the self-supervised Pix2Pix purifier vs NRP "
                     "and adversarial training (Tables 1-6, Figs. 2-6)")(Recipe(
        name="ssr-purifier",
        title="Self-supervised Pix2Pix purifier (SSR report, seed 000)",
        report="000_1f49f9fd3ff2e8ce.txt", settings=Settings, steps=ssr_purifier.steps,
        outputs=OUTPUTS, claims=claims,
        notes=("Every number names its metric and threat model. The report's own numbers "
               "(CIFAR-10, full widths, 200 purifier epochs) are in parentheses; the quick preset "
               "runs on Fashion-MNIST at CPU size, so compare shapes and orderings, not levels.",)))


_register()
