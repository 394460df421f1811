"""The seed report's comparison (seed 003, section VI, fig. a6): does contrastive pre-training help?

Two arms with the same supervised budget (same data, model, fine-tuning config and seed):
  * "pre-trained": contrastive pre-training (ACL A2S by default), then fine-tuning from its encoder;
  * "no pre-training": the same fine-tuning config from a random initialisation.
Both are then attacked by white-box PGD at each eps on the same test images with the same seed.
The pre-trained arm's extra cost (its pre-training seconds) is reported, not hidden.

Writes under ``out``: ``pretrain/``, ``finetuned/``, ``baseline/`` (ordinary run directories),
``pgd_vs_eps.{csv,json,png}`` (both curves on one figure) and ``comparison.{json,md}`` (accuracy
per eps for both arms and their difference in points).

Under torchrun every process runs every step: the three trainings and the sweep (the evaluation
harness shards its images) as they run under torchrun alone; rank 0 holds ``out``'s lock and
writes the results, and every rank returns them.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

from ... import models as rl_models
from ..._checks import check_eps, check_int, check_positive
from ..._io import file_group, new_dirs, provenance, write_json, write_text
from ..._lock import Lock
from ...defaults import step_text
from ...config import to_dict
from ...distributed import barrier, world
from ...errors import ConfigError
from ...runtime import resolve_device
from ..checks import check_names
from ..classifier.config import TrainConfig
from .finetune import finetune
from .methods import PRETRAIN_METHODS
from .config import PretrainConfig
from .trainer import pretrain
from ..classifier.trainer import check_startable, train
from ..splits import load_split

DEFAULT_EPS = (0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15)
_SHARED = ("dataset", "model", "width", "model_kwargs", "subset", "val", "seed", "data")


def arm_names(pre: PretrainConfig, fine: TrainConfig) -> tuple[str, str]:
    """Curve labels: (pre-trained arm, baseline arm)."""
    return (f"{pre.method} pre-training + {fine.method}", f"no pre-training + {fine.method}")


def compare_pretraining(pre: PretrainConfig, fine: TrainConfig, out: str | Path, *,
                        eps: Sequence[float] = DEFAULT_EPS, pgd_steps: int = 10,
                        step_size: float | None = None, n: int | None = None,
                        data_root: str | None = None, device: str | None = "auto",
                        resume: bool = False, overwrite: bool = False,
                        progress: bool = True) -> dict[str, Any]:
    """Train both arms, sweep white-box PGD accuracy over ``eps`` and write the comparison.

    Args:
        pre: the pre-training config. fine: the fine-tuning config, used for both arms (its
            ``init`` must be None; the pre-trained arm sets it to the encoder). Both must agree on
            dataset, model, width, model_kwargs, subset, val and seed.
        eps: PGD budgets in [0, 1] pixel units (the clean accuracy is added as eps 0).
        pgd_steps, step_size: PGD settings (step_size None: pgd's default step, from
            ``attacks.DEFAULT_STEP``), random start, one restart.
        n: evaluate on the first n test images (None: all).
    Returns:
        The summary written to ``comparison.json``.
    """
    _check_arms(pre, fine)
    _check_evaluation(eps, pgd_steps, step_size, n)
    check_names(pre, PRETRAIN_METHODS)
    check_startable(fine)
    out = Path(out)
    runs = dict(data_root=data_root, device=device, resume=resume, overwrite=overwrite,
                progress=progress)
    main = world().main  # under torchrun: rank 0 locks and writes
    with (new_dirs(out) if main else nullcontext()), \
            (Lock(out, is_dir=True, what=f"--out {out}") if main else nullcontext()):
        summary = _compare(pre, fine, out, runs, eps, pgd_steps, step_size, n, data_root, device,
                           progress and main)
    barrier(world())  # the other ranks return once the results are written
    return summary


def _compare(pre, fine, out: Path, runs: dict, eps, pgd_steps, step_size, n, data_root, device,
             progress) -> dict[str, Any]:
    pre_final = pretrain(pre, out / "pretrain", **runs)
    encoder = out / "pretrain" / "encoder.safetensors"
    ft_final = finetune(fine.replace(init=str(encoder)), out / "finetuned", **runs)
    base_final = train(fine, out / "baseline", **runs)

    named = dict(zip(arm_names(pre, fine), ("finetuned", "baseline")))
    dev = resolve_device(device)
    arms = {name: rl_models.load(out / run / "model.safetensors", kind="classifier").to(dev)
            for name, run in named.items()}
    from ...evaluation import save_sweep, sweep  # the evaluation harness (imports attacks)

    test = load_split(fine, "test", data_root)
    settings: dict[str, Any] = {"steps": pgd_steps}
    if step_size is not None:
        settings["step_size"] = step_size
    values = [0.0, *sorted(float(e) for e in eps)]
    rows = sweep(arms, test, "pgd", param="eps", values=values, settings=settings, n=n,
                 seed=fine.seed, device=dev, progress=progress)
    paths = _save_sweep(rows, out / "pgd_vs_eps",
                        f"{fine.dataset} {fine.model}: white-box PGD-{pgd_steps}", save_sweep)
    table = difference_table(rows, *arm_names(pre, fine))
    summary = {
        "arms": {name: run for name, run in named.items()},
        "table": table,
        "mean_difference_points": _mean([r["difference_points"] for r in table if r["eps"] > 0]),
        "seconds": {"pretrain": _seconds(out / "pretrain"), "finetune": _seconds(out / "finetuned"),
                    "baseline": _seconds(out / "baseline")},
        "final_metrics": {"pretrain": pre_final, "finetuned": ft_final, "baseline": base_final},
        "evaluation": {"attack": "pgd", "threat": "white-box", "steps": pgd_steps,
                       "step_size": step_size or step_text("pgd"), "n": rows[0]["n"],
                       "seed": fine.seed},
        "pretrain_config": to_dict(pre), "train_config": to_dict(fine),
        "files": {k: str(v) for k, v in paths.items()}, "provenance": provenance(),
    }
    if world().main:
        with file_group():
            write_json(out / "comparison.json", summary)
            write_text(out / "comparison.md", markdown_table(table, *arm_names(pre, fine)))
    return summary


def _save_sweep(rows, prefix: Path, title: str, save) -> dict[str, Path]:
    """The sweep's files (rank 0 writes them); their paths on every rank."""
    if world().main:
        with file_group():
            return save(rows, prefix, title=title)
    return {ext: prefix.with_name(f"{prefix.name}.{ext}") for ext in ("csv", "json", "png")}


def difference_table(rows: list[dict], pre_name: str, base_name: str) -> list[dict]:
    """Per eps: both accuracies (in %) and pre-trained minus baseline, in percentage points."""
    acc = {(r["model"], r["value"]): 100 * r["acc"] for r in rows}
    out = []
    for value in sorted({r["value"] for r in rows}):
        a, b = acc[(pre_name, value)], acc[(base_name, value)]
        out.append({"eps": value, "pretrained": round(a, 2), "baseline": round(b, 2),
                    "difference_points": round(a - b, 2)})
    return out


def markdown_table(table: list[dict], pre_name: str, base_name: str) -> str:
    """The comparison as a Markdown table (eps 0 is the clean accuracy)."""
    lines = [f"| eps | {pre_name} (%) | {base_name} (%) | difference (points) |",
             "| --- | --- | --- | --- |"]
    for r in table:
        eps = "0 (clean)" if r["eps"] == 0 else f"{r['eps']:g}"
        lines.append(f"| {eps} | {r['pretrained']:.2f} | {r['baseline']:.2f} | "
                     f"{r['difference_points']:+.2f} |")
    return "\n".join(lines) + "\n"


def _check_arms(pre: PretrainConfig, fine: TrainConfig) -> None:
    diff = [k for k in _SHARED if getattr(pre, k) != getattr(fine, k)]
    if diff:
        raise ConfigError(f"the pre-training and fine-tuning configs must agree on "
                          f"{', '.join(diff)} for a fair comparison (got "
                          + ", ".join(f"{k}: {getattr(pre, k)!r} vs {getattr(fine, k)!r}"
                                      for k in diff) + ")")
    if fine.init:
        raise ConfigError("the fine-tuning config of a comparison must not set init: the "
                          "pre-trained arm starts from the encoder, the baseline from scratch")


def _check_evaluation(eps: Sequence[float], pgd_steps: int, step_size: float | None,
                      n: int | None) -> None:
    """The evaluation settings, checked before hours of training depend on them."""
    if not eps:
        raise ConfigError("eps needs at least one PGD budget")
    for e in eps:
        check_eps(e, name="eps", positive=True)
    check_int("pgd_steps", pgd_steps)
    if step_size is not None:
        check_positive("pgd_step_size", step_size)
    if n is not None:
        check_int("n", n)


def _seconds(run: Path) -> float:
    """Training seconds summed over a run's epochs (validation passes excluded)."""
    path = run / "metrics.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []
    return round(sum(m.get("seconds", 0.0) for m in lines), 3)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None
