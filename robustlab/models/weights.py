"""Plain state_dict files (``torch.save(model.state_dict(), "m.pt")``, ``.pth``, ``.safetensors``)
loaded into a robustlab classifier, without ever unpickling code.

``.pt``/``.pth`` go through ``torch.load(weights_only=True)``: tensors and plain containers only,
so a whole pickled model is refused (with how to save a state_dict instead). A training
checkpoint that nests the weights (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped, and
the ``module.`` prefix of DataParallel (``_orig_mod.`` of torch.compile) is stripped. Keys and
shapes are compared before anything is copied: the error names the first missing and unexpected
keys and the first shape mismatches, both shapes given, in one line.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import nonfinite_tensors
from ..errors import CheckpointError

_NESTED = ("state_dict", "model_state_dict", "model", "net", "weights", "params")
_PREFIXES = ("module.", "_orig_mod.")
_NORMALIZE = ("normalize.mean", "normalize.std")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state_dict file, on the CPU, prefixes stripped, all finite.

    Raises:
        CheckpointError: a missing or unreadable file, a pickled model, a file that holds no
            state_dict, or NaN/infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found")
    obj = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    state = _unnest(obj, path)
    state = _strip_prefixes(state)
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinite values in {', '.join(bad[:6])}: the "
                              "training that wrote it diverged; use other weights")
    return state


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error type for bad headers/sizes
        raise CheckpointError(f"{path} is not a readable safetensors file "
                              f"({type(exc).__name__}: {exc})") from None


def _read_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():  # not a refused object: damaged bytes
            raise CheckpointError(f"{path} cannot be read as a torch.save file (UnpicklingError: "
                                  f"{str(exc).splitlines()[0]})") from None
        raise CheckpointError(
            f"{path} holds a pickled Python object (a whole model?), not a state_dict; robustlab "
            "loads weights only and never runs pickled code: save the weights with "
            f"torch.save(model.state_dict(), {str(path)!r}) and load them with --arch NAME (or "
            "--weights), or save the model with robustlab.models.save") from None
    except Exception as exc:  # a truncated zip, a text file, ...: torch raises many types
        raise CheckpointError(f"{path} cannot be read as a torch.save file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _unnest(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    if isinstance(obj, dict):
        for key in _NESTED:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and \
                    all(isinstance(v, torch.Tensor) for v in inner.values()):
                return {str(k): v for k, v in inner.items()}
        odd = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
        what = (f"entry {odd!r} holds type {type(obj[odd]).__name__}" if odd is not None
                else "it is empty")
        raise CheckpointError(f"{path} is not a state_dict ({what}); save the weights with "
                              "torch.save(model.state_dict(), PATH)")
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict; save the "
                          "weights with torch.save(model.state_dict(), PATH)")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:  # DataParallel's module., torch.compile's _orig_mod.
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def fit_problems(own: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]],
                 limit: int = 6) -> str | None:
    """What keeps ``found`` (file key -> shape) from loading into ``own`` (module key -> shape):
    "missing keys (N): ...; unexpected keys (N): ...; shape mismatches (N): k: file (..) vs
    model (..)", or None when they fit."""
    missing = sorted(set(own) - set(found))
    unexpected = sorted(set(found) - set(own))
    wrong = [f"{k}: file {found[k]} vs model {own[k]}"
             for k in sorted(set(own) & set(found)) if found[k] != own[k]]
    parts = [f"{label} ({len(keys)}): {', '.join(keys[:limit])}"
             f"{' ...' if len(keys) > limit else ''}"
             for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", wrong)) if keys]
    return "; ".join(parts) or None


def load_weights(model: nn.Module, weights: str | Path | dict[str, torch.Tensor], *,
                 where: str | None = None) -> nn.Module:
    """Copy a state_dict (a file, or one :func:`read_state_dict` returned, ``where`` naming its
    file in errors) into ``model`` (a robustlab classifier) and return it.

    For a wrapped network (``torchvision:``, ``timm:``, ``python:``, :func:`with_normalization`)
    the file may hold the network's own keys (``conv1.weight``) or the wrapper's
    (``net.conv1.weight``, ``normalize.mean``). A file without the ``normalize.*`` buffers keeps
    the model's normalisation.

    Raises:
        CheckpointError: see :func:`read_state_dict`, or keys/shapes that do not fit (named).
    """
    where = where or ("the state_dict" if isinstance(weights, dict) else str(weights))
    state = dict(weights) if isinstance(weights, dict) else read_state_dict(weights)
    target = target_of(model, state)
    own = target.state_dict()
    if target is model:
        for key in _NORMALIZE:  # keep the model's normalisation when the file has none
            if key in own and key not in state:
                state[key] = own[key]
    problems = fit_problems(shapes(own), shapes(state))
    if problems:
        raise CheckpointError(f"{where} does not fit {describe(model)}: {problems} (check the "
                              "architecture, --num-classes and --in-channels)")
    target.load_state_dict(state, strict=True)
    return model


def target_of(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """The module a state_dict is for: a wrapper's ``net`` when the keys are the network's."""
    net = getattr(model, "net", None)
    if isinstance(net, nn.Module) and not any(k.startswith(("net.", "normalize.")) for k in state):
        return net
    return model


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """key -> shape of a state_dict."""
    return {k: tuple(v.shape) for k, v in state.items()}


def describe(model: nn.Module) -> str:
    """``torchvision:resnet18 (num_classes=10, in_channels=3)``, from the model's spec."""
    spec = getattr(model, "robustlab_spec", None) or {}
    kw = spec.get("kwargs", {})
    name = spec.get("name") or getattr(model, "label", None) or type(model).__name__
    counts = ", ".join(f"{k}={kw[k]}" for k in ("num_classes", "in_channels") if k in kw)
    return f"{name} ({counts})" if counts else str(name)
