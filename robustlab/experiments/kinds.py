"""What each kind of step runs: one robustlab entry point, writing into the step's folder.

Every runner takes the step's resolved settings (references already replaced by paths) and a
:class:`Context`, does its work in ``ctx.folder``, and returns a JSON-able result that becomes
part of ``results.json``. Training steps resume: an interrupted step continues from its last
saved epoch when the recipe is run again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..registry import Registry

Runner = Callable[[dict, "Context"], dict]
KINDS: Registry[Runner] = Registry("step kind")


@dataclass(frozen=True)
class Context:
    folder: Path
    data_root: str | None = None
    device: str = "auto"
    progress: bool = True


def _metrics(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


@KINDS.register("train", help="train a classifier (robustlab train)")
def run_train(s: dict, ctx: Context) -> dict:
    from ..config import from_dict
    from ..training import TrainConfig, train

    cfg = from_dict(TrainConfig, s["config"], where="train step")
    final = train(cfg, ctx.folder, data_root=ctx.data_root, device=ctx.device, resume=True,
                  progress=ctx.progress)
    return {"final": final, "metrics": _metrics(ctx.folder)}


@KINDS.register("pretrain", help="contrastive pre-training (robustlab pretrain)")
def run_pretrain(s: dict, ctx: Context) -> dict:
    from ..training.contrastive import PretrainConfig, pretrain

    cfg = PretrainConfig.from_dict(s["config"])
    final = pretrain(cfg, ctx.folder, data_root=ctx.data_root, device=ctx.device, resume=True,
                     progress=ctx.progress)
    return {"final": final, "metrics": _metrics(ctx.folder)}


@KINDS.register("train-purifier", help="train a purifier (robustlab train-purifier)")
def run_train_purifier(s: dict, ctx: Context) -> dict:
    from ..config import from_dict
    from ..training.purifier.trainer import train_purifier
    from ..training.purifier.config import PurifierConfig

    cfg = from_dict(PurifierConfig, s["config"], where="train-purifier step")
    final = train_purifier(cfg, ctx.folder, data_root=ctx.data_root, device=ctx.device,
                           resume=True, progress=ctx.progress)
    grids = sorted(ctx.folder.glob("grid_epoch*.png"), key=lambda p: int(p.stem[10:]))
    return {"final": final, "metrics": _metrics(ctx.folder),
            "grid": str(grids[-1]) if grids else None}


def _load(path: str | None, kind: str):
    from .. import models as rl_models

    return rl_models.load(path, kind=kind) if path else None


def _model(s: dict):
    from ..purifiers import Purified

    classifier = _load(s["model"], "classifier")
    purifier = _load(s.get("purifier"), "purifier")
    return Purified(purifier, classifier) if purifier is not None else classifier


def _extractor(s: dict, fallback):
    from .. import models as rl_models

    base = _load(s.get("extractor"), "classifier") or fallback
    return rl_models.feature_extractor(base, s.get("extractor_blocks", 2))


@KINDS.register("evaluate", help="clean and attacked accuracy under threat models")
def run_evaluate(s: dict, ctx: Context) -> dict:
    from .. import attacks as rl_attacks
    from .. import data as rl_data
    from .._io import write_json
    from ..distributed import world
    from ..evaluation import evaluate, save_adversarial

    model = _model(s)
    ds = rl_data.load(s["dataset"], s.get("split", "test"), root=ctx.data_root)
    needs_extractor = any(rl_attacks.ATTACKS.get(a["name"]).model_role == "extractor"
                          for a in s["attacks"])
    extractor = _extractor(s, getattr(model, "classifier", model)) if needs_extractor else None
    source = _load(s.get("source"), "classifier")
    r = evaluate(model, ds, s["attacks"], n=s.get("n"), batch_size=s.get("batch_size", 256),
                 device=_device(ctx), seed=s.get("seed", 0), source=source, extractor=extractor,
                 eot_samples=s.get("eot_samples", 10), progress=ctx.progress,
                 sanity=s.get("sanity", False), check_large_eps=s.get("check_large_eps"),
                 keep_adv=bool(s.get("save_adv")))
    full = r.to_dict()
    if not world().main:  # under torchrun every process has the result; the first writes it
        return {k: v for k, v in full.items() if k != "per_sample"}
    write_json(ctx.folder / "evaluation.json", full)
    saved = {}
    if s.get("save_adv"):
        x, y = ds.images[:r.n].float() / 255, ds.labels[:r.n]
        for i, (key, x_adv) in enumerate(r.adv.items()):
            path = save_adversarial(ctx.folder / f"adv{i}.safetensors", x_adv, y, x, label=key,
                                    attack=r.config["attacks"][i], dataset=s["dataset"])
            saved[key] = str(path)
    return {k: v for k, v in full.items() if k != "per_sample"} | {"saved_adv": saved}


@KINDS.register("sweep", help="accuracy against eps or steps for several models")
def run_sweep(s: dict, ctx: Context) -> dict:
    from .. import data as rl_data
    from ..evaluation import save_sweep, sweep

    purifier = _load(s.get("purifier"), "purifier")
    models = {}
    for name, path in s["models"].items():
        m = _load(path, "classifier")
        if purifier is not None:
            from ..purifiers import Purified
            m = Purified(purifier, m)
        models[name] = m
    first = next(iter(models.values()))
    ds = rl_data.load(s["dataset"], s.get("split", "test"), root=ctx.data_root)
    needs_extractor = any(a == "feature-distortion" for a in s["attacks"])
    rows = sweep(models, ds, s["attacks"], param=s["param"], values=s["values"],
                 settings=s.get("settings") or {}, threat=s.get("threat", "white-box"),
                 n=s.get("n"), seed=s.get("seed", 0), batch_size=s.get("batch_size", 256),
                 device=_device(ctx), progress=ctx.progress,
                 source=_load(s.get("source"), "classifier"),
                 extractor=_extractor(s, getattr(first, "classifier", first))
                 if needs_extractor else None)
    files = save_sweep(rows, ctx.folder / "sweep", title=s.get("title", ""))
    return {"rows": rows, "files": {k: str(v) for k, v in files.items()}}


@KINDS.register("score", help="saved adversarial examples scored on several pipelines")
def run_score(s: dict, ctx: Context) -> dict:
    """``adv``: name -> examples file; ``models``: name -> checkpoint, or {model, purifier}.
    Rows carry clean, robust (right clean and attacked) and perturbed (right attacked: the
    reports' metric) accuracy."""
    import torch

    from ..evaluation import load_adversarial, score_adversarial

    models = {name: _model(spec if isinstance(spec, dict) else {"model": spec})
              for name, spec in s["models"].items()}
    device = _device(ctx)
    rows = []
    for adv_name, path in s["adv"].items():
        x_adv, y, x, _ = load_adversarial(path)
        n = min(s.get("n") or len(y), len(y))
        x_adv, y, x = x_adv[:n], y[:n], x[:n]
        for name, model in models.items():
            flags = score_adversarial(model, x_adv, y, x, device=device)
            if "perturbed" not in flags:
                with torch.no_grad():
                    pred = torch.cat([model(x_adv[i:i + 256].to(device)).argmax(1).cpu()
                                      for i in range(0, n, 256)])
                flags["perturbed"] = pred == y
            rows.append({"examples": adv_name, "model": name, "n": n,
                         **{f"{k}_acc": float(v.float().mean()) for k, v in flags.items()}})
    return {"rows": rows}


@KINDS.register("purify-grid", help="one test image per class: perturbed / purified / clean")
def run_purify_grid(s: dict, ctx: Context) -> dict:
    import torch

    from .. import data as rl_data
    from ..attacks import feature_distortion
    from ..viz import save_image_rows

    purifier = _load(s["purifier"], "purifier").eval()
    extractor = _extractor(s, None)
    ds = rl_data.load(s["dataset"], "test", root=ctx.data_root)
    first = [int((ds.labels == c).nonzero()[0]) for c in range(ds.num_classes)
             if bool((ds.labels == c).any())]
    x = ds.images[first].float() / 255
    gen = torch.Generator().manual_seed(s.get("seed", 0))
    x_adv = feature_distortion(extractor, x, eps=s["eps"], steps=s.get("steps", 20),
                               generator=gen)
    with torch.no_grad():
        purified = purifier(x_adv).clamp(0, 1)
    path = save_image_rows([x_adv, purified, x], ctx.folder / "grid.png",
                           labels=["perturbed", "purified", "clean"],
                           title="one test image per class")
    return {"grid": str(path), "classes": [str(ds.class_names[int(ds.labels[i])]) for i in first]}


def _device(ctx: Context):
    from ..runtime import resolve_device

    return resolve_device(ctx.device)
