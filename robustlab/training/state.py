"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

``last.safetensors`` holds the tensors of one or more modules and optimisers (and any method/hook
tensors); ``last.json`` holds the epoch, each optimiser's scalar state and param groups, and
free-form extras. Both are written atomically; the JSON goes last, so it never points at tensors
that are not there.

One model and one optimiser (the classifier trainer)::

    save_state(stem, model=m, optimizer=opt, epoch=3)

Several named ones (the purifier trainer: generator and critic)::

    save_state(stem, modules={"G": g, "D": d}, optimizers={"G": opt_g, "D": opt_d}, epoch=3)

Tensor names: ``model.*`` / ``optim.<param id>.*`` for the single model and optimiser (the
original layout, so older states still load) and ``modules.<name>.*`` /
``optims.<name>.<param id>.*`` for named ones.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._io import atomic_path, sha256_file, write_json
from ..errors import CheckpointError, ConfigError

FORMAT = "robustlab-train-state"
_MODEL, _OPTIM = "model", "optim"  # prefixes of the single (unnamed) model and optimiser


def _named(single: Any, named: Mapping[str, Any] | None, single_prefix: str, named_prefix: str,
           what: str) -> dict[str, Any]:
    """prefix -> object, for the single object (if any) and every named one."""
    out: dict[str, Any] = {}
    if single is not None:
        out[single_prefix] = single
    for name, obj in (named or {}).items():
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError(f"{what} names must be non-empty strings without dots, got {name!r}")
        out[f"{named_prefix}.{name}"] = obj
    return out


def _modules(model, modules) -> dict[str, torch.nn.Module]:
    mods = _named(model, modules, _MODEL, "modules", "module")
    if not mods:
        raise ConfigError("save_state/load_state need a model= or modules={name: module}")
    return mods


def _optimizers(optimizer, optimizers) -> dict[str, torch.optim.Optimizer]:
    return _named(optimizer, optimizers, _OPTIM, "optims", "optimizer")


def save_state(stem: str | Path, *, model: torch.nn.Module | None = None,
               optimizer: torch.optim.Optimizer | None = None, epoch: int,
               extra: dict[str, Any] | None = None, tensors: dict[str, torch.Tensor] | None = None,
               modules: Mapping[str, torch.nn.Module] | None = None,
               optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> None:
    """Write ``stem.safetensors`` + ``stem.json`` describing the state after ``epoch`` epochs.

    Args:
        stem: path without suffix (e.g. ``run/last``).
        model, optimizer: the single model and optimiser (classifier trainer).
        modules, optimizers: further named ones (names without dots), e.g. ``{"G": g, "D": d}``.
        epoch: epochs completed. extra: JSON-able extras. tensors: extra tensors.
    """
    stem = Path(stem)
    flat: dict[str, torch.Tensor] = {}
    for prefix, module in _modules(model, modules).items():
        flat.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    opt_meta = {prefix: _flatten_optimizer(opt, prefix, flat)
                for prefix, opt in _optimizers(optimizer, optimizers).items()}
    for key, val in (tensors or {}).items():
        flat[f"extra.{key}"] = val
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in flat.items()}
    with atomic_path(stem.with_suffix(".safetensors")) as tmp:
        save_file(flat, str(tmp))
        digest = sha256_file(tmp)
    # the JSON names the exact tensors file it belongs to: an interruption between the two
    # renames is caught on load instead of resuming new weights with an old epoch count
    meta: dict[str, Any] = {"format": FORMAT, "epoch": epoch, "tensors_sha256": digest}
    if _OPTIM in opt_meta:  # the original layout of the single optimiser
        single = opt_meta.pop(_OPTIM)
        meta["optimizer_param_groups"] = single["param_groups"]
        meta["optimizer_scalars"] = single["scalars"]
    meta["modules"] = sorted(_modules(model, modules))
    meta["optimizers"] = {k.split(".", 1)[1]: v for k, v in opt_meta.items()}
    meta["extra"] = extra or {}
    write_json(stem.with_suffix(".json"), meta)


def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str,
                       flat: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Put the optimiser's tensors into ``flat`` (``<prefix>.<param id>.<key>``); return its
    param groups and scalar state (JSON)."""
    sd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                flat[f"{prefix}.{pid}.{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def load_state(stem: str | Path, *, model: torch.nn.Module | None = None,
               optimizer: torch.optim.Optimizer | None = None,
               modules: Mapping[str, torch.nn.Module] | None = None,
               optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
               ) -> tuple[int, dict[str, Any], dict[str, torch.Tensor]]:
    """Restore the given modules and optimisers in place; return (epochs done, extras, extra
    tensors). The names must be those the state was saved with (CheckpointError otherwise)."""
    stem = Path(stem)
    meta, flat = _read(stem)
    mods = _modules(model, modules)
    saved = set(meta.get("modules", [_MODEL]))  # states written before named modules: the model
    if saved != set(mods):
        def names(prefixes):
            return ", ".join(sorted(p.split(".", 1)[-1] for p in prefixes))
        raise CheckpointError(f"the training state in {stem} holds {names(saved)} but "
                              f"{names(mods)} were asked for; it is another kind of run")
    for prefix, module in mods.items():
        _load_module(module, flat, prefix, stem)
    for prefix, opt in _optimizers(optimizer, optimizers).items():
        if prefix == _OPTIM:
            groups, scalars = meta.get("optimizer_param_groups"), meta.get("optimizer_scalars", {})
        else:
            entry = meta.get("optimizers", {}).get(prefix.split(".", 1)[1], {})
            groups, scalars = entry.get("param_groups"), entry.get("scalars", {})
        if groups is None:
            raise CheckpointError(f"the training state in {stem} has no optimizer {prefix!r}")
        _load_optimizer(opt, flat, prefix, groups, scalars)
    extra_t = {k[6:]: v for k, v in flat.items() if k.startswith("extra.")}
    return meta["epoch"], meta.get("extra", {}), extra_t


def _read(stem: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON and the tensors of a state, checked: its format, a sane epoch count, and that
    the tensors file is the one the JSON was written with."""
    meta_path, weights_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    try:
        meta = json.loads(meta_path.read_text())
        flat = load_file(str(weights_path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read the training state {stem}: {exc}. "
                              "Start again with --overwrite.") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a robustlab training state")
    epoch = meta.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"{meta_path} is damaged: its epoch is {epoch!r}, not a count of "
                              "finished epochs; start again with --overwrite")
    if "tensors_sha256" in meta and meta["tensors_sha256"] != sha256_file(weights_path):
        raise CheckpointError(f"{weights_path} does not belong to {meta_path} (the run was "
                              "interrupted while saving); start again with --overwrite")
    return meta, flat


def _load_module(module: torch.nn.Module, flat: dict[str, torch.Tensor], prefix: str,
                 stem: Path) -> None:
    cut = len(prefix) + 1
    sd = {k[cut:]: v for k, v in flat.items() if k.startswith(prefix + ".")}
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        what = "model" if prefix == _MODEL else f"module {prefix.split('.', 1)[1]!r}"
        raise CheckpointError(f"the training state in {stem} does not fit this {what}: {exc}") from exc


def _load_optimizer(opt: torch.optim.Optimizer, flat: dict[str, torch.Tensor], prefix: str,
                    groups: list, scalars: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, val in flat.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(pid), {})[name] = val
    for pid, vals in scalars.items():
        state.setdefault(int(pid), {}).update(vals)
    state = dict(sorted(state.items()))  # safetensors sorts names; restore param order
    opt.load_state_dict({"state": state, "param_groups": groups})
    # Adam's step counters live on the CPU; moments follow their parameter's device
    for param, pstate in opt.state.items():
        for name, val in pstate.items():
            if isinstance(val, torch.Tensor) and name != "step":
                pstate[name] = val.to(param.device)


def has_state(stem: str | Path) -> bool:
    stem = Path(stem)
    return stem.with_suffix(".json").exists() and stem.with_suffix(".safetensors").exists()
