"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

``last.safetensors`` holds the model's and optimiser's tensors (and any method/hook tensors);
``last.json`` holds the epoch, the optimiser's scalar state and param groups, and free-form extras.
Both are written atomically; the JSON goes last, so it never points at tensors that are not there.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._io import atomic_path, write_json
from ..errors import CheckpointError

FORMAT = "robustlab-train-state"


def save_state(stem: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               epoch: int, extra: dict[str, Any] | None = None,
               tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``stem.safetensors`` + ``stem.json`` describing the state after ``epoch`` epochs."""
    stem = Path(stem)
    flat: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in opt["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                flat[f"optim.{pid}.{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    for key, val in (tensors or {}).items():
        flat[f"extra.{key}"] = val
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in flat.items()}
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file(flat, str(tmp))
    write_json(stem.with_suffix(".json"), {
        "format": FORMAT, "epoch": epoch, "optimizer_param_groups": opt["param_groups"],
        "optimizer_scalars": scalars, "extra": extra or {},
    })


def load_state(stem: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               ) -> tuple[int, dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model and optimiser in place; return (epochs done, extras, extra tensors)."""
    stem = Path(stem)
    meta_path, weights_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    try:
        meta = json.loads(meta_path.read_text())
        flat = load_file(str(weights_path))
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read the training state {stem}: {exc}. "
                              "Start again with --overwrite.") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a robustlab training state")
    device = next(iter(model.state_dict().values())).device
    model_sd = {k[6:]: v for k, v in flat.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the training state in {stem} does not fit this model: {exc}") from exc
    opt_state: dict[int, dict[str, Any]] = {}
    for key, val in flat.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = val
    for pid, vals in meta["optimizer_scalars"].items():
        opt_state.setdefault(int(pid), {}).update(vals)
    opt_state = dict(sorted(opt_state.items()))  # safetensors sorts names; restore param order
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer_param_groups"]})
    for pstate in optimizer.state.values():  # Adam's step counters live on the CPU; moments follow params
        for name, val in pstate.items():
            if isinstance(val, torch.Tensor) and name != "step":
                pstate[name] = val.to(device)
    extra_t = {k[6:]: v for k, v in flat.items() if k.startswith("extra.")}
    return int(meta["epoch"]), meta.get("extra", {}), extra_t


def has_state(stem: str | Path) -> bool:
    stem = Path(stem)
    return stem.with_suffix(".json").exists() and stem.with_suffix(".safetensors").exists()
