"""A rough cost of a step before it runs, for ``--dry-run``: image passes (one forward and
backward of one image) times a CPU throughput. A guide for planning, not a measurement."""
from __future__ import annotations

from .steps import Step

# image passes per second on a 2-core CPU for width-0.25 32x32 models (measured once on this
# project's machine: small-cnn and width-0.25 VGG/ResNet train at 800-1000 images/s); a full
# width costs about 16x more
_PASSES_PER_SECOND = 900.0


def _width_factor(width: float) -> float:
    return max(width / 0.25, 0.25) ** 2


def _attack_passes(attack: dict) -> int:
    name = attack.get("name", "pgd")
    if name == "fgsm":
        return 2
    if name == "autoattack":
        return 10 * (attack.get("n_iter") or 100)  # APGD-CE + APGD-T's 9 target classes
    return int(attack.get("steps", 20)) + 1


def estimate_seconds(step: Step) -> float:
    s = step.settings
    if step.kind in ("train", "pretrain", "train-purifier"):
        cfg = s["config"]
        n = cfg.get("subset") or 50_000
        n = n if isinstance(n, int) else int(n * 50_000)
        per = 1
        if step.kind == "train":
            args = cfg.get("method_args", {})
            per = {"standard": 1, "fgsm": 2, "fast-fgsm": 2}.get(cfg.get("method", "standard"),
                                                                  int(args.get("steps", 10)) + 1)
        elif step.kind == "pretrain":
            per = 2 * (int(cfg.get("steps", 5)) + 1)
        else:
            per = int(cfg.get("steps", 20)) + 4
        return cfg.get("epochs", 10) * n * per * _width_factor(cfg.get("width", 1.0)) \
            / _PASSES_PER_SECOND
    if step.kind == "purify-grid":
        return 5.0
    n = s.get("n") or 10_000
    if step.kind == "evaluate":
        return n * (1 + sum(_attack_passes(a) for a in s["attacks"])) / _PASSES_PER_SECOND
    if step.kind == "sweep":
        cost = 0
        for a in s["attacks"]:
            steps = 1 if a == "fgsm" else int((s.get("settings") or {}).get("steps", 10))
            cost += sum((int(v) if s["param"] == "steps" else steps) + 1 for v in s["values"])
        return n * len(s["models"]) * cost / _PASSES_PER_SECOND
    return n * 2 / _PASSES_PER_SECOND
