"""Accuracy as attack strength grows (eps or steps), for several models: rows, CSV/JSON, a plot."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping, Sequence

from torch import nn

from .._io import atomic_path, write_json, write_text
from ..data import ImageDataset, as_tensors
from ..errors import ConfigError
from .harness import evaluate
from .sanity import monotonic_warnings
from .specs import AttackSpec


def sweep(models: Mapping[str, nn.Module], data, attack: str | Sequence[str], *, param: str,
          values: Sequence, settings: dict | None = None,
          attack_settings: Mapping[str, dict] | None = None, threat: str = "white-box",
          n: int | None = None, seed: int = 0, batch_size: int = 256, device=None,
          progress: bool = False, source: nn.Module | None = None,
          extractor: nn.Module | None = None, amp=None, channels_last: bool = False,
          compile: bool = False) -> list[dict]:
    """Both accuracies of each model under each attack for each value of setting ``param``.

    ``attack`` is a name or a list of names; ``settings`` apply to every attack and
    ``attack_settings`` (attack name -> settings) to one. The same seed is used at every point so
    curves differ only by the swept setting. eps 0 is scored as clean accuracy. Returns rows
    {model, attack, threat, param, value, acc, perturbed_acc, n}: ``acc`` is the robust accuracy
    (right clean and attacked), ``perturbed_acc`` the accuracy on the attacked inputs alone (the
    seed reports' metric); see :mod:`robustlab.evaluation.harness` (also for the speed options
    ``amp``, ``channels_last`` and ``compile``).
    """
    attacks = [attack] if isinstance(attack, str) else list(attack)
    if not models:
        raise ConfigError("sweep needs at least one model")
    if not values:
        raise ConfigError(f"sweep needs at least one value of {param}")
    if not attacks:
        raise ConfigError("sweep needs at least one attack")
    specs = sweep_specs(attacks, param, values, settings, attack_settings, threat)
    if not isinstance(data, ImageDataset):  # read a Dataset or DataLoader once: every model
        data = as_tensors(data, limit=n)     # sees the same samples (a shuffling loader too)
    rows = []
    for name, model in models.items():
        res = evaluate(model, data, specs, n=n, seed=seed, batch_size=batch_size, device=device,
                       progress=progress, source=source, extractor=extractor, amp=amp,
                       channels_last=channels_last, compile=compile)
        for a in attacks:
            for v in values:
                clean, key = param == "eps" and v == 0, f"{a}:{param}={v}"
                rows.append({"model": name, "attack": a, "threat": threat, "param": param,
                             "value": v, "acc": res.clean_acc if clean else res.acc[key],
                             "perturbed_acc": res.clean_acc if clean else res.perturbed_acc[key],
                             "n": res.n})
    return rows


def sweep_specs(attacks: Sequence[str], param: str, values: Sequence, settings: dict | None = None,
                attack_settings: Mapping[str, dict] | None = None,
                threat: str = "white-box") -> list[AttackSpec]:
    """The checked specs of a sweep, one per (attack, value) but eps 0 (scored as clean accuracy):
    building them is what checks every point's settings, so a caller can do it before loading."""
    per_attack = {a: {**(settings or {}), **(attack_settings or {}).get(a, {})} for a in attacks}
    return [AttackSpec(a, {**per_attack[a], param: v}, threat, label=f"{a}:{param}={v}")
            for a in attacks for v in values if not (param == "eps" and v == 0)]


FIELDS = ["model", "attack", "threat", "param", "value", "acc", "perturbed_acc", "n"]
METRIC_LABELS = {"acc": "robust accuracy (%)",  # right clean and attacked
                 "perturbed_acc": "accuracy on perturbed inputs (%)"}  # the reports' metric


def save_sweep(rows: Sequence[dict], out_prefix: str | Path, *, title: str = "",
               metric: str = "acc") -> dict[str, Path]:
    """Write ``<prefix>.csv``, ``<prefix>.json`` (rows + warnings) and ``<prefix>.png``, which
    plots ``metric`` ("acc": robust accuracy, or "perturbed_acc"); both are in the CSV and JSON."""
    _check_metric(metric)  # before any file is written
    prefix = Path(out_prefix)
    paths = {ext: prefix.with_name(prefix.name + f".{ext}") for ext in ("csv", "json", "png")}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(paths["csv"], buf.getvalue())
    write_json(paths["json"], {"rows": list(rows), "warnings": monotonic_warnings(rows)})
    plot_rows(rows, paths["png"], title=title, metric=metric)
    return paths


def plot_rows(rows: Sequence[dict], path: Path, *, title: str = "", metric: str = "acc") -> None:
    _check_metric(metric)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    curves: dict[str, list[dict]] = {}
    for r in rows:
        curves.setdefault(f"{r['model']} ({r['attack']}@{r['threat']})"
                          if len({x['attack'] for x in rows}) > 1 else r["model"], []).append(r)
    for label, rs in curves.items():
        rs = sorted(rs, key=lambda r: r["value"])
        ax.plot([r["value"] for r in rs], [100 * r[metric] for r in rs], marker="o", label=label)
    param = rows[0]["param"] if rows else ""
    ax.set_xlabel(param)
    ax.set_ylabel(METRIC_LABELS[metric])
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title or (f"{rows[0]['attack']} ({rows[0]['threat']})" if rows else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _check_metric(metric: str) -> None:
    if metric not in METRIC_LABELS:
        raise ConfigError(f"metric must be one of {', '.join(METRIC_LABELS)}, got {metric!r}")
