"""Checkpoints are data, not code: safetensors weights plus a JSON sidecar (DESIGN.md).

``save(model, "dir/model.safetensors", dataset=..., config=..., metrics=...)`` writes
``dir/model.safetensors`` (the state dict, buffers included) and ``dir/model.json``::

    {"format": "robustlab-checkpoint", "format_version": 1, "kind": "classifier", "name": "vgg19",
     "kwargs": {...}, "meta": {...}, "provenance": {...}, "num_parameters": N,
     "weights_sha256": "..."}

``load`` rebuilds the module from its registry by name and arguments and copies the tensors in;
nothing is ever unpickled. The checksum ties the pair together: a truncated weights file, or one
overwritten by a different save, is reported instead of being loaded.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import _json_default, atomic_path, provenance, sha256_file, write_json
from ..errors import CheckpointError, ConfigError, RobustlabError
from .factory import MODELS, attach_spec, create

FORMAT = "robustlab-checkpoint"
FORMAT_VERSION = 1
# kind -> (module, registry attribute); classifiers are built with create()
_REGISTRIES = {"purifier": ("robustlab.purifiers", "PURIFIERS"),
               "critic": ("robustlab.purifiers", "CRITICS")}


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, sidecar) for ``X.safetensors``, ``X.json`` or the stem ``X``."""
    text = str(path)
    for suffix in (".safetensors", ".json"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return Path(text + ".safetensors"), Path(text + ".json")


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel / DataParallel keep the model in .module, torch.compile in ._orig_mod
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def save(model: nn.Module, path: str | Path, **meta: Any) -> Path:
    """Write ``model``'s weights (safetensors) and its JSON sidecar, both atomically.

    Args:
        model: a module carrying ``robustlab_spec`` (built by ``create`` or a registry factory
            that called ``attach_spec``); DDP and torch.compile wrappers are unwrapped.
        path: ``X.safetensors`` (the suffix is added when missing).
        **meta: JSON-able extras stored under ``"meta"`` (dataset, config, metrics, ...).

    Returns:
        The path of the ``.safetensors`` file.
    """
    model = _unwrap(model)
    spec = getattr(model, "robustlab_spec", None)
    if not isinstance(spec, dict) or not {"kind", "name", "kwargs"} <= spec.keys():
        raise CheckpointError(f"{type(model).__name__} has no robustlab_spec, so it could not be "
                              "rebuilt from the checkpoint; build it with "
                              "robustlab.models.create() (or call "
                              "robustlab.models.attach_spec on it)")
    try:
        meta = json.loads(json.dumps(meta, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None
    tensors = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is a {type(value).__name__}, "
                                  "not a tensor; safetensors stores tensors only")
        # own contiguous CPU copies: shared or strided storage cannot be written as-is
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
    weights, sidecar = checkpoint_paths(path)
    from safetensors.torch import save_file

    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        digest = sha256_file(tmp)
    write_json(sidecar, {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "kind": spec["kind"], "name": spec["name"], "kwargs": spec["kwargs"], "meta": meta,
        "provenance": provenance(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": digest,
    })
    return weights


def read_meta(path: str | Path) -> dict[str, Any]:
    """The validated JSON sidecar of a checkpoint (``X.safetensors``, ``X.json`` or stem ``X``)."""
    weights, sidecar = checkpoint_paths(path)
    if not sidecar.is_file():
        if weights.is_file():
            raise CheckpointError(
                f"{sidecar.name} not found next to {weights.name}: the sidecar names the "
                f"architecture needed to rebuild the model; copy it along with the weights "
                f"(expected at {sidecar})")
        raise CheckpointError(f"no checkpoint at {weights}: neither it nor {sidecar.name} exists")
    try:
        doc = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{sidecar} is not a readable JSON sidecar: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(f"{sidecar} is not a robustlab checkpoint sidecar "
                              f"(format {found!r}, expected {FORMAT!r})")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        hint = "upgrade robustlab to read it" if newer else "re-save it with this robustlab"
        raise CheckpointError(f"{sidecar} has format_version {version!r}; this robustlab reads "
                              f"version {FORMAT_VERSION}: {hint}")
    for key, typ in (("kind", str), ("name", str), ("kwargs", dict), ("meta", dict)):
        if not isinstance(doc.get(key), typ):
            raise CheckpointError(f"{sidecar} is damaged: {key!r} should be a {typ.__name__}, "
                                  f"got {doc.get(key)!r}")
    return doc


def _build(doc: dict[str, Any], sidecar: Path) -> nn.Module:
    """Rebuild the module the sidecar describes, with random weights."""
    kind, name, kwargs = doc["kind"], doc["name"], dict(doc["kwargs"])
    if "pretrained" in kwargs:
        kwargs["pretrained"] = False  # the weights come from the file, never from a download
    if kind == "classifier":
        registry: Any = MODELS
    elif kind in _REGISTRIES:
        module_name, attr = _REGISTRIES[kind]
        try:
            registry = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise CheckpointError(f"{sidecar} holds a {kind}, but {module_name}.{attr} is not "
                                  f"available in this robustlab: {exc}") from None
    else:
        raise CheckpointError(f"{sidecar} holds an unknown kind of module {kind!r}; "
                              f"known kinds: classifier, {', '.join(_REGISTRIES)}")
    if name not in registry:
        raise CheckpointError(f"{sidecar} holds an unknown architecture: "
                              f"{registry.unknown_message(name)}")
    try:
        if kind == "classifier":
            return create(name, **kwargs)
        return attach_spec(registry.get(name)(**kwargs), kind, name, kwargs)
    except (RobustlabError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot rebuild {kind} {name!r} from {sidecar} "
                              f"with arguments {kwargs}: {exc}") from exc


def _read_tensors(weights: Path, doc: dict[str, Any], sidecar: Path) -> dict[str, torch.Tensor]:
    expected = doc.get("weights_sha256")
    if expected is not None and sha256_file(weights) != expected:
        raise CheckpointError(f"{weights} does not match {sidecar.name} (checksum differs): the "
                              "file is truncated or corrupt, or was overwritten by another save; "
                              "re-save or re-copy both files")
    from safetensors.torch import load_file

    try:
        return load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error type for bad headers/sizes
        raise CheckpointError(f"{weights} is truncated or corrupt and cannot be read "
                              f"({type(exc).__name__}: {exc}); re-save or re-copy it") from None


def _check_fit(model: nn.Module, state: dict[str, torch.Tensor], doc: dict[str, Any],
               weights: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if not (missing or unexpected or wrong):
        return
    parts = [f"{label} ({len(keys)}): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
             for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", wrong)) if keys]
    raise CheckpointError(f"{weights} does not fit the {doc['kind']} {doc['name']!r} "
                          f"{doc['kwargs']} named by its sidecar: {'; '.join(parts)}")


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved module from its registry and load its weights; nothing is unpickled.

    Args:
        path: ``X.safetensors``, ``X.json`` or the stem ``X``.
        map_location: device for the returned module.

    Returns:
        The module in eval mode, with ``robustlab_meta`` = the sidecar dict.
    """
    weights, sidecar = checkpoint_paths(path)
    if not weights.is_file():
        extra = f" (only {sidecar.name} exists)" if sidecar.is_file() else ""
        raise CheckpointError(f"checkpoint weights {weights} not found{extra}")
    doc = read_meta(weights)
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"map_location {map_location!r} is not a device: {exc}") from None
    state = _read_tensors(weights, doc, sidecar)
    model = _build(doc, sidecar)
    _check_fit(model, state, doc, weights)
    model.to(device)
    model.load_state_dict(state, strict=True)
    model.eval()
    model.robustlab_meta = doc
    return model
