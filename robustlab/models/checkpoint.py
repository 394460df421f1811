"""Checkpoints are data, not code: safetensors weights plus a JSON sidecar (DESIGN.md).

``save(model, "dir/model.safetensors", dataset=..., config=..., metrics=...)`` writes
``dir/model.safetensors`` (the state dict, buffers included) and ``dir/model.json``::

    {"format": "robustlab-checkpoint", "format_version": 1, "kind": "classifier", "name": "vgg19",
     "kwargs": {...}, "meta": {...}, "provenance": {...}, "num_parameters": N,
     "weights_sha256": "..."}

``load`` rebuilds the module from its registry by name and arguments and copies the tensors in;
nothing is ever unpickled. The checksum ties the pair together: a truncated weights file, or one
overwritten by a different save, is reported instead of being loaded. The sidecar is not trusted
for sizes: the architecture it names is first built on the meta device (no memory) and compared
with the tensor shapes in the safetensors header, and only a match is built for real. Weights
with NaN or infinite values are refused both by ``save`` and by ``load`` (a diverged run).

Architectures from outside robustlab are names too (``torchvision:resnet18``, ``timm:NAME``,
``python:MODULE:FACTORY``; see ``prefixes.py``). One whose code lives outside robustlab
(``python:``, or a name the user's module registered, recorded as the sidecar's ``"code"``) is
rebuilt only when the caller trusts that code: ``load(path, trust_code=True)``.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .._checks import nonfinite_tensors
from .._io import atomic_path, json_default, provenance, sha256_file, write_json
from ..errors import CheckpointError, ConfigError, RobustlabError, UnknownNameError
from .external import TRUST_HINT, code_trusted, trusting
from .factory import MODELS, create
from .kinds import MODULE_KINDS, kind_names, module_kind, register_kind
from .weights import fit_problems

FORMAT = "robustlab-checkpoint"
FORMAT_VERSION = 1
# what absurd sidecar arguments raise while building on the meta device (e.g. an overflowing size)
_BUILD_ERRORS = (RobustlabError, TypeError, ValueError, RuntimeError, OverflowError)


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


def save(model: nn.Module, path: str | Path, *, source: str | None = None,
         **meta: Any) -> Path:
    """Write ``model``'s weights (safetensors) and its JSON sidecar, both atomically.

    Args:
        model: a module carrying ``robustlab_spec`` (built by ``create``, ``open_model`` or a
            registry factory that called ``attach_spec``), or any classifier with ``source``;
            DDP and torch.compile wrappers are unwrapped.
        path: ``X.safetensors`` (the suffix is added when missing).
        source: for a module of your own: the function that rebuilds it,
            ``"python:MODULE:FACTORY"`` (importable; loaded back with ``trust_code=True``) or
            ``"torchvision:NAME"``/``"timm:NAME"``; see :func:`~robustlab.models.from_module`.
        **meta: JSON-able extras stored under ``"meta"`` (dataset, config, metrics, ...).

    Returns:
        The path of the ``.safetensors`` file.
    """
    model = _unwrap(model)
    spec = getattr(model, "robustlab_spec", None)
    if source is not None:
        if isinstance(spec, dict):
            raise ConfigError(f"{type(model).__name__} already records how it is built "
                              f"({spec.get('name')!r}); save it without source=")
        from .own_module import from_module

        model = from_module(model, source)
        spec = model.robustlab_spec
    if not isinstance(spec, dict) or not {"kind", "name", "kwargs"} <= spec.keys():
        raise CheckpointError(f"{type(model).__name__} has no robustlab_spec, so it could not be "
                              "rebuilt from the checkpoint; save it with "
                              "robustlab.models.save(model, path, source='python:MODULE:FACTORY') "
                              "naming an importable function that builds it (loaded back with "
                              "robustlab.models.load(path, trust_code=True)), or build it with "
                              "robustlab.models.create()")
    try:
        meta = json.loads(json.dumps(meta, default=json_default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None
    tensors = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is a {type(value).__name__}, "
                                  "not a tensor; safetensors stores tensors only")
        # own contiguous CPU copies: shared or strided storage cannot be written as-is
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(f"refusing to save {type(model).__name__}: {_names(bad)} hold NaN "
                              "or infinite values, so the training diverged; lower the learning "
                              "rate and train again")
    weights, sidecar = checkpoint_paths(path)
    from safetensors.torch import save_file

    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        digest = sha256_file(tmp)
    write_json(sidecar, {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "kind": spec["kind"], "name": spec["name"], "kwargs": spec["kwargs"], "meta": meta,
        **({"code": spec["code"]} if spec.get("code") is not None else {}),
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
                f"(expected at {sidecar}), or, if {weights.name} is a plain state_dict, name its "
                "network with --arch NAME (robustlab.models.open_model(path, ModelSource(arch="
                "NAME)))")
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
    if not isinstance(doc.get("code", ""), str):
        raise CheckpointError(f"{sidecar} is damaged: 'code' should be a module name, got "
                              f"{doc.get('code')!r}")
    return doc


def _names(keys: list[str], limit: int = 6) -> str:
    """``"3 tensors (a, b, c)"``, with at most ``limit`` names."""
    more = " ..." if len(keys) > limit else ""
    return f"{len(keys)} tensor{'s' if len(keys) != 1 else ''} ({', '.join(keys[:limit])}{more})"


def _check_kind(doc: dict[str, Any], kind: str | None, weights: Path) -> None:
    if kind is None:
        return
    known = kind_names()
    if kind not in known:
        raise ConfigError(f"kind must be one of {', '.join(known)} or None, got {kind!r}")
    have = doc["kind"]
    if have != kind:
        hint = (MODULE_KINDS.get(have).hint if have in MODULE_KINDS
                else f"known kinds: {', '.join(known)}")
        raise CheckpointError(f"{weights} is a {have} checkpoint, not a {kind}; {hint}")


class _CallBudget(TorchFunctionMode):
    """Stops a build that calls torch far more often than a module with the file's ``n`` tensors
    needs (about 4-15 calls per tensor): an edited ``n_blocks`` of 10**9 would otherwise keep
    building modules on the meta device for hours."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.left = n, 100 * (n + 10)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.left -= 1
        if self.left < 0:
            raise CheckpointError(f"the sidecar describes a module with far more tensors than "
                                  f"the {self.n} in the weights file (edited, or it belongs to "
                                  "other weights)")
        return func(*args, **(kwargs or {}))


def _on_meta(n_tensors: int):
    stack = contextlib.ExitStack()
    stack.enter_context(torch.device("meta"))
    stack.enter_context(_CallBudget(n_tensors))
    return stack


def _build(doc: dict[str, Any], sidecar: Path, meta_for: int | None = None,
           trust_code: bool = False) -> nn.Module:
    """Rebuild the module the sidecar describes, with random weights; or, given the number of
    tensors of the file (``meta_for``), on the meta device (nothing allocated) to learn its
    shapes, stopping early when it grows far beyond the file."""
    kind, name, kwargs = doc["kind"], doc["name"], dict(doc["kwargs"])
    if "pretrained" in kwargs:
        kwargs["pretrained"] = False  # the weights come from the file, never from a download
    if kind not in kind_names():
        raise CheckpointError(f"{sidecar} holds an unknown kind of module {kind!r}; "
                              f"known kinds: {', '.join(kind_names())}")
    entry = module_kind(kind)
    with trusting(trust_code):
        _find_architecture(doc, entry.architectures, sidecar)
        try:
            with contextlib.nullcontext() if meta_for is None else _on_meta(meta_for):
                return entry.build(name, **kwargs)
        except _BUILD_ERRORS as exc:
            why = str(exc) if isinstance(exc, RobustlabError) else f"{type(exc).__name__}: {exc}"
            raise CheckpointError(f"cannot rebuild {kind} {name!r} from {sidecar} with arguments "
                                  f"{kwargs}: {why}") from exc


def _find_architecture(doc: dict[str, Any], architectures, sidecar: Path) -> None:
    """Make sure ``doc``'s architecture can be built, before any meta-device build: user code
    is imported only when trusted (``python:`` names, and names a user module registers), and a
    ``torchvision:``/``timm:``/``python:`` name is resolved (imports, name checks) here."""
    import importlib

    name, code = doc["name"], doc.get("code")
    registered_by_user = code is not None and name not in architectures
    if registered_by_user and code == "__main__":
        raise CheckpointError(f"{sidecar} names {name!r}, registered by a script that ran as "
                              "__main__, which cannot be imported: move the registration into a "
                              "module on PYTHONPATH and save again, or save the model with "
                              "source='python:MODULE:FACTORY'")
    if (registered_by_user or name.startswith("python:")) and not code_trusted():
        raise CheckpointError(f"{sidecar} is built by user code from "
                              f"{code or name.split(':')[1]} ({name!r}), which robustlab runs "
                              f"only when asked: {TRUST_HINT}")
    if registered_by_user:
        try:
            importlib.import_module(code)
        except ImportError as exc:
            raise CheckpointError(f"{sidecar} names {name!r}, registered by module {code}, "
                                  f"which cannot be imported ({exc}); put it on PYTHONPATH") \
                from None
    if name not in architectures:
        raise CheckpointError(f"{sidecar} holds an unknown architecture: "
                              f"{architectures.unknown_message(name)}")
    try:
        architectures.get(name)  # torchvision:/timm:/python: names import and check here
    except (UnknownNameError, ConfigError) as exc:
        what = "holds an unknown architecture: " if isinstance(exc, UnknownNameError) else ""
        raise CheckpointError(f"{sidecar} {what}{exc}") from None


def _read_header(weights: Path, doc: dict[str, Any], sidecar: Path) -> dict[str, tuple[int, ...]]:
    """Checksum, then the tensor shapes of the safetensors header (no tensor is read)."""
    expected = doc.get("weights_sha256")
    if expected is not None and sha256_file(weights) != expected:
        raise CheckpointError(f"{weights} does not match {sidecar.name} (checksum differs): the "
                              "file is truncated or corrupt, or was overwritten by another save; "
                              "re-save or re-copy both files")
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error type for bad headers/sizes
        raise CheckpointError(f"{weights} is truncated or corrupt and cannot be read "
                              f"({type(exc).__name__}: {exc}); re-save or re-copy it") from None


def _read_tensors(weights: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # as in _read_header: the file changed or its data is damaged
        raise CheckpointError(f"{weights} is truncated or corrupt and cannot be read "
                              f"({type(exc).__name__}: {exc}); re-save or re-copy it") from None
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"{weights} holds NaN or infinite values in {_names(bad)}: the "
                              "training that wrote it diverged; use an earlier checkpoint or "
                              "train again with a lower learning rate")
    return state


def _check_fit(own: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]],
               doc: dict[str, Any], weights: Path) -> None:
    """Refuse a file whose keys or shapes (``found``) differ from the module's (``own``)."""
    problems = fit_problems(own, found)
    if problems:
        raise CheckpointError(f"{weights} does not fit the {doc['kind']} {doc['name']!r} "
                              f"{doc['kwargs']} named by its sidecar: {problems}")


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_channels(doc: dict[str, Any], found: dict[str, tuple[int, ...]], weights: Path) -> None:
    """A classifier's ``in_channels`` against its Normalize buffer (1, C, 1, 1), before ``create``
    spends time and memory expanding mean/std to C values."""
    c, shape = doc["kwargs"].get("in_channels"), found.get("normalize.mean")
    if doc["kind"] == "classifier" and isinstance(c, int) and shape and len(shape) == 4 \
            and shape[1] != c:
        raise CheckpointError(f"{weights} does not fit the classifier {doc['name']!r} named by "
                              f"its sidecar: shape mismatches (1): normalize.mean: file {shape} "
                              f"vs model {(1, c, 1, 1)} (in_channels={c})")


def load(path: str | Path, map_location: str | torch.device = "cpu", *,
         kind: str | None = None, trust_code: bool = False) -> nn.Module:
    """Rebuild a saved module from its registry and load its weights; nothing is unpickled.

    The architecture named by the sidecar is checked against the file's header on the meta device
    before anything is allocated, so an edited sidecar (a huge ``width`` or ``num_classes``) is
    refused instead of exhausting memory.

    Args:
        path: ``X.safetensors``, ``X.json`` or the stem ``X``.
        map_location: device for the returned module.
        kind: ``"classifier"``, ``"purifier"`` or ``"critic"`` to demand that kind of module
            (``None``: any). Callers that need a classifier should pass ``kind="classifier"``.
        trust_code: allow the user code a ``python:`` checkpoint (or one of an architecture
            registered by the user's module) needs imported; refused otherwise.

    Returns:
        The module in eval mode, with ``robustlab_meta`` = the sidecar dict.

    Raises:
        CheckpointError: missing, corrupt or non-finite files, a sidecar that does not fit the
            weights, or a checkpoint of another kind than ``kind``.
    """
    weights, sidecar = checkpoint_paths(path)
    if not weights.is_file():
        extra = f" (only {sidecar.name} exists)" if sidecar.is_file() else ""
        raise CheckpointError(f"checkpoint weights {weights} not found{extra}")
    doc = read_meta(weights)
    _check_kind(doc, kind, weights)
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"map_location {map_location!r} is not a device: {exc}") from None
    found = _read_header(weights, doc, sidecar)
    _check_channels(doc, found, weights)
    _check_fit(_shapes(_build(doc, sidecar, len(found), trust_code)), found, doc, weights)
    state = _read_tensors(weights)  # sizes now bounded by the file itself
    model = _build(doc, sidecar, None, trust_code)
    _check_fit(_shapes(model), found, doc, weights)  # a factory that builds differently on meta
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    model.robustlab_meta = doc
    return model


register_kind("classifier", MODELS, create,
              hint="pass it as --model (or --source / --extractor)")
