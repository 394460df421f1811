"""The SSR purifier report (seed 000) as a recipe: its settings and the steps they expand into.

Steps: three classifiers (VGG16, VGG19, ResNet18); the report's "AT" baselines (ResNet18 and
VGG19 trained on adversaries crafted on the fixed VGG19, FGSM and the report's PGD, eps 16);
five purifiers (B3 = ours, NRP, and the ablation presets A-L1, B1, B2), label-free on
feature-distortion adversaries of VGG19's first two blocks; adversarial examples crafted once on
VGG19 (the report's attacks: FD, FGSM, its PGD with step 0.1 and no random start, and robustlab's
PGD-20 with step eps/4) and scored on every pipeline (the report's gray-box / transfer setting);
and, beyond the report, white-box and BPDA attacks through each purified pipeline, AutoAttack
(APGD-CE + APGD-T) and the gradient-masking checks, the eps and steps sweeps of Fig. 4, and the
image grids. The tables and figures are in :mod:`.ssr_tables`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from .steps import Step, ref

CLASSIFIERS = ("vgg16", "vgg19", "resnet18")
PURIFIERS = {"b3": "B3", "nrp": "NRP", "a-l1": "A-L1", "b1": "B1", "b2": "B2"}
DEFENDED = ("vgg19", "resnet18")  # the classifiers of Tables 4 and 6
E8, E16 = 8 / 255, 16 / 255


@dataclass(frozen=True)
class Settings:
    """Every setting of the recipe; each preset of recipes/ssr-purifier.yaml gives all of them."""

    dataset: str
    seed: int
    width: float                  # classifiers' channel multiplier (1 = the report's)
    cls_epochs: int
    cls_subset: Optional[int]     # training images (None: the whole split)
    cls_batch: int
    cls_optimizer: str
    cls_lr: float
    cls_weight_decay: float
    at_epochs: int                # the "AT" baselines (report: 50)
    at_subset: Optional[int]
    at_pgd_steps: int             # steps of the report's PGD (step 0.1) used to train "AT PGD"
    pur_width: float              # purifiers' and critics' channel multiplier
    pur_epochs: int               # report: 200
    pur_subset: Union[int, float]  # fraction or count of the training split (report: 0.3)
    pur_batch: int                # report: 16
    pur_fd_steps: int             # feature-distortion steps of the training adversaries
    pur_val_n: int                # test images scored after each purifier epoch (Fig. 6)
    nrp_blocks: int               # RRDB blocks of NRP (published: 23)
    n_eval: Optional[int]         # test images of Tables 1-6 (None: the whole split)
    n_whitebox: Optional[int]     # test images of the white-box / BPDA columns
    n_autoattack: int
    aa_n_iter: Optional[int]      # APGD iterations (None: AutoAttack's 100)
    n_sweep: int                  # test images of Fig. 4
    pgd_steps: int                # robustlab's PGD (step eps/4, random start)
    sweep_eps: tuple[float, ...]  # Fig. 4a
    sweep_steps: tuple[int, ...]  # Fig. 4b (at eps 8/255)
    check_large_eps: float        # gradient-masking check: PGD at this eps must reach ~0%
    imagenet_vgg16_epochs: int    # Table 5's ImageNet-transfer VGG16 at 224x224 (0: not built)
    imagenet_vgg16_pretrained: bool  # start from torchvision's ImageNet weights


def _train(name: str, s: Settings, model: str, about: str, **extra) -> Step:
    cfg = {"dataset": s.dataset, "model": model, "width": s.width, "epochs": s.cls_epochs,
           "batch_size": s.cls_batch, "optimizer": s.cls_optimizer, "lr": s.cls_lr,
           "weight_decay": s.cls_weight_decay, "subset": s.cls_subset, "val": 0, "seed": s.seed,
           **extra}
    return Step(name, "train", {"config": cfg}, about)


def _purifier(key: str, s: Settings) -> Step:
    cfg = {"dataset": s.dataset, "extractor": ref("classifier-vgg19", "model.safetensors"),
           "extractor_blocks": 2, "preset": PURIFIERS[key], "width": s.pur_width,
           "epochs": s.pur_epochs, "subset": s.pur_subset, "batch_size": s.pur_batch,
           "steps": s.pur_fd_steps, "eps": E16, "val_n": s.pur_val_n, "grid_n": 8,
           "seed": s.seed}
    if key == "nrp":
        cfg.update(arch="nrp", arch_kwargs={"n_blocks": s.nrp_blocks})
    return Step(f"purifier-{key}", "train-purifier", {"config": cfg},
                f"purifier {PURIFIERS[key]} (label-free, FD adversaries of VGG19 blocks 1-2)")


def clf(m: str) -> str:
    return ref(f"classifier-{m}", "model.safetensors")


def pur(key: str) -> str:
    return ref(f"purifier-{key}", "purifier.safetensors")


def at_model(kind: str, m: str) -> str:
    return ref(f"at-{kind}-{m}", "model.safetensors")


# the attacks crafted once on VGG19 and scored everywhere (labels are the keys of the results)
def crafted_attacks(s: Settings) -> list[dict]:
    out = [{"name": "feature-distortion", "label": "fd16", "eps": E16, "steps": 20}]
    for e, tag in ((E8, "8"), (E16, "16")):
        out += [{"name": "fgsm", "label": f"fgsm{tag}", "eps": e},
                {"name": "pgd", "label": f"pgd{tag}-report", "eps": e, "step_size": 0.1,
                 "steps": 20, "random_start": False},
                {"name": "pgd", "label": f"pgd{tag}", "eps": e, "steps": s.pgd_steps}]
    return out


def pipelines() -> dict[str, dict]:
    """Every pipeline the crafted examples are scored on: name -> {model, purifier}."""
    out = {f"none-{m}": {"model": clf(m)} for m in CLASSIFIERS}
    for key in PURIFIERS:
        for m in (CLASSIFIERS if key in ("b3", "nrp") else DEFENDED):
            out[f"{key}-{m}"] = {"model": clf(m), "purifier": pur(key)}
    for kind in ("fgsm", "pgd"):
        for m in DEFENDED:
            out[f"at-{kind}-{m}"] = {"model": at_model(kind, m)}
    return out


def _whitebox(s: Settings) -> list[Step]:
    """Beyond the report: FGSM/PGD through each whole pipeline (white-box) and with BPDA."""
    attacks = []
    for e, tag in ((E8, "8"), (E16, "16")):
        for threat in ("white-box", "bpda"):
            attacks += [{"name": "fgsm", "label": f"fgsm{tag}@{threat}", "eps": e,
                         "threat": threat},
                        {"name": "pgd", "label": f"pgd{tag}@{threat}", "eps": e,
                         "steps": s.pgd_steps, "threat": threat}]
    plain = [a for a in attacks if a["threat"] == "white-box"]
    steps = []
    for m in DEFENDED:
        for key in ("b3", "nrp"):
            steps.append(Step(f"whitebox-{key}-{m}", "evaluate", {
                "model": clf(m), "purifier": pur(key), "dataset": s.dataset, "split": "test",
                "n": s.n_whitebox, "attacks": attacks, "seed": s.seed, "sanity": True,
                "check_large_eps": s.check_large_eps}, f"{PURIFIERS[key]} + {m}, white-box/BPDA"))
        for name, model in ((f"none-{m}", clf(m)), (f"at-fgsm-{m}", at_model("fgsm", m)),
                            (f"at-pgd-{m}", at_model("pgd", m))):
            steps.append(Step(f"whitebox-{name}", "evaluate", {
                "model": model, "dataset": s.dataset, "split": "test", "n": s.n_whitebox,
                "attacks": plain, "seed": s.seed}, f"{name}, white-box"))
    return steps


def _autoattack(s: Settings) -> list[Step]:
    aa = [{"name": "autoattack", "label": "apgd-ce+apgd-t", "eps": E8, "version": "custom",
           "attacks": ["apgd-ce", "apgd-t"], "threat": "white-box", "n_iter": s.aa_n_iter},
          {"name": "pgd", "label": "pgd8", "eps": E8, "steps": s.pgd_steps}]
    out = []
    for name, spec in (("none", {"model": clf("resnet18")}),
                       ("at-pgd", {"model": at_model("pgd", "resnet18")}),
                       ("nrp", {"model": clf("resnet18"), "purifier": pur("nrp")}),
                       ("b3", {"model": clf("resnet18"), "purifier": pur("b3")})):
        out.append(Step(f"autoattack-{name}-resnet18", "evaluate", {
            **spec, "dataset": s.dataset, "split": "test", "n": s.n_autoattack, "attacks": aa,
            "seed": s.seed}, f"AutoAttack through {name} + resnet18"))
    return out


def _sweeps(s: Settings) -> list[Step]:
    common = {"dataset": s.dataset, "split": "test", "n": s.n_sweep, "seed": s.seed,
              "attacks": ["pgd"]}
    out = [Step("sweep-eps-bare", "sweep", {
        **common, "models": {"none": clf("resnet18"), "at-pgd": at_model("pgd", "resnet18")},
        "param": "eps", "values": list(s.sweep_eps), "settings": {"steps": s.pgd_steps},
        "threat": "white-box"}, "Fig. 4a: undefended and AT-PGD ResNet18")]
    for key in ("b3", "nrp"):
        for threat in ("gray-box", "white-box"):
            out.append(Step(f"sweep-eps-{key}-{threat}", "sweep", {
                **common, "models": {key: clf("resnet18")}, "purifier": pur(key),
                "param": "eps", "values": list(s.sweep_eps),
                "settings": {"steps": s.pgd_steps}, "threat": threat},
                f"Fig. 4a: {PURIFIERS[key]} + ResNet18, {threat}"))
    for threat in ("gray-box", "white-box"):
        out.append(Step(f"sweep-steps-b3-{threat}", "sweep", {
            **common, "models": {"b3": clf("resnet18")}, "purifier": pur("b3"),
            "param": "steps", "values": list(s.sweep_steps), "settings": {"eps": E8},
            "threat": threat}, f"Fig. 4b: B3 + ResNet18, {threat}"))
    return out


def _imagenet_vgg16(s: Settings) -> list[Step]:
    """The report's ImageNet-transfer VGG16 (Table 5): torchvision's VGG16 fine-tuned on the
    dataset's images resized to 224x224 (paper preset; a CPU preset sets 0 epochs)."""
    if s.imagenet_vgg16_epochs < 1:
        return []
    train = _train("classifier-vgg16-imagenet", s, "vgg16-imagenet",
                   "Table 5: ImageNet-transfer VGG16 at 224x224",
                   epochs=s.imagenet_vgg16_epochs, optimizer="sgd", lr=0.01, weight_decay=5e-4,
                   width=1.0 if s.imagenet_vgg16_pretrained else s.width,
                   model_kwargs={"pretrained": s.imagenet_vgg16_pretrained,
                                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    clean = Step("clean-vgg16-imagenet", "evaluate", {
        "model": ref("classifier-vgg16-imagenet", "model.safetensors"), "dataset": s.dataset,
        "split": "test", "n": s.n_eval, "attacks": [], "seed": s.seed},
        "Table 5: clean accuracy of the ImageNet-transfer VGG16")
    return [train, clean]


def steps(s: Settings) -> list[Step]:
    """Every step of the recipe at settings ``s``."""
    out = [_train(f"classifier-{m}", s, m, f"{m} classifier (Table 5)") for m in CLASSIFIERS]
    for kind, attack in (("fgsm", {"attack": "fgsm"}),
                         ("pgd", {"attack": "pgd", "step_size": 0.1, "steps": s.at_pgd_steps,
                                  "attack_args": {"random_start": False}})):
        for m in DEFENDED:
            out.append(_train(f"at-{kind}-{m}", s, m, f"report's AT baseline: {m} on VGG19's "
                              f"{kind.upper()} adversaries, eps 16", method="transfer-adv",
                              method_args={"source": clf("vgg19"), "eps": E16,
                                           "mode": "inject", **attack},
                              epochs=s.at_epochs, subset=s.at_subset))
    out += [_purifier(k, s) for k in PURIFIERS]
    out.append(Step("craft-vgg19", "evaluate", {
        "model": clf("vgg19"), "extractor": clf("vgg19"), "extractor_blocks": 2,
        "dataset": s.dataset, "split": "test", "n": s.n_eval, "attacks": crafted_attacks(s),
        "seed": s.seed, "save_adv": True}, "attacks crafted on VGG19 (Tables 1-4, 6)"))
    out.append(Step("craft-vgg16-fd", "evaluate", {
        "model": clf("vgg16"), "extractor": clf("vgg16"), "extractor_blocks": 2,
        "dataset": s.dataset, "split": "test", "n": s.n_eval, "seed": s.seed, "save_adv": True,
        "attacks": [{"name": "feature-distortion", "label": "fd16", "eps": E16, "steps": 20}]},
        "feature distortion crafted on VGG16 (Table 1)"))
    adv = {a["label"]: ref("craft-vgg19", f"adv{i}.safetensors")
           for i, a in enumerate(crafted_attacks(s))}
    adv["fd16-vgg16"] = ref("craft-vgg16-fd", "adv0.safetensors")
    out.append(Step("score-crafted", "score", {"adv": adv, "models": pipelines()},
                    "every crafted set scored on every pipeline (gray-box / transfer)"))
    out += _whitebox(s) + _autoattack(s) + _sweeps(s) + _imagenet_vgg16(s)
    out.append(Step("grid-per-class", "purify-grid", {
        "purifier": pur("b3"), "extractor": clf("vgg19"), "extractor_blocks": 2,
        "dataset": s.dataset, "eps": E16, "steps": 20, "seed": s.seed},
        "Fig. 5: one test image per class, perturbed / purified / clean"))
    return out
