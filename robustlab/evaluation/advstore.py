"""Crafted adversarial examples on disk, so one attack run can be scored on many models
(the SSR report's Tables 1 and 2 are such a matrix). safetensors + a JSON sidecar; no pickle.

A file is not trusted on load. The sidecar records the sha256 of the tensors file and the threat
model (eps, norm) the examples were crafted under; :func:`load_adversarial` checks the checksum,
the lengths, shapes and dtypes, that the pixels are finite and in [0, 1], and that every x_adv lies
in the recorded eps-ball around its x. Any failure is one :class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from .._io import atomic_path, provenance, sha256_file, write_json
from ..attacks.geometry import check_eps, check_norm
from ..errors import CheckpointError, InputError, RobustlabError

FORMAT = "robustlab-adversarial-examples"
TOLERANCE = 1e-5  # float32 rounding of x + delta (the projection runs in float32)


def save_adversarial(path: str | Path, x_adv: torch.Tensor, y: torch.Tensor, x: torch.Tensor, *,
                     eps: float | None = None, norm: str | None = None, **meta: Any) -> Path:
    """Write ``path`` (.safetensors: x_adv, y, and the clean x) and its .json sidecar.

    Args:
        x_adv, x: (N, C, H, W) images in [0, 1]; y: (N,) class indices.
        eps, norm: the threat model the examples were crafted under (norm "linf" when only eps
            is given). Both None: read from ``meta["attack"]["settings"]`` (what
            ``evaluate --save-adv`` passes).
        **meta: JSON-able extras stored under ``"meta"``.
    Returns: the path of the .safetensors file.
    Raises: InputError, before writing, when the examples break what :func:`load_adversarial`
        checks (a file that could not be loaded back is never written).
    """
    path = Path(path).with_suffix(".safetensors")
    tensors = {"x_adv": x_adv.detach().float().cpu().contiguous(),
               "x": x.detach().float().cpu().contiguous(), "y": y.detach().long().cpu().contiguous()}
    try:
        threat = _threat({"threat": _given(eps, norm), "meta": meta})
    except RobustlabError as exc:
        raise InputError(f"cannot save adversarial examples to {path}: {exc}") from None
    if threat is None:
        warnings.warn(f"{path}: no eps/norm given, so loading it cannot check that the examples "
                      "lie in their eps-ball; pass eps= and norm=", stacklevel=2)
    problem = _problem(tensors, len(y), threat)
    if problem:
        raise InputError(f"cannot save adversarial examples to {path}: {problem}")
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
        digest = sha256_file(tmp)
    write_json(path.with_suffix(".json"), {"format": FORMAT, "n": len(y), "threat": threat,
                                           "tensors_sha256": digest, "meta": meta,
                                           "provenance": provenance()})
    return path


def load_adversarial(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(x_adv, y, x, sidecar) from a file written by :func:`save_adversarial`, verified (see the
    module docstring).

    Files written before the checksum existed are accepted with a warning, not refused: the eps-ball,
    range, shape and length checks still run on them (their sidecars record the attack's settings),
    and a checksum kept beside the file guards against mix-ups and edits, not against a forger, who
    could rewrite the sidecar too; refusing would only strand results that can still be checked.
    Raises: CheckpointError naming the file and the problem.
    """
    path = Path(path).with_suffix(".safetensors")
    try:
        side = json.loads(path.with_suffix(".json").read_text())
        data = path.read_bytes()
        t = load_bytes(data)
    except Exception as exc:  # OSError, JSONDecodeError, or safetensors' own error types
        raise CheckpointError(f"cannot read adversarial examples {path}: {exc}") from None
    if not isinstance(side, dict) or side.get("format") != FORMAT or set(t) != {"x_adv", "x", "y"}:
        raise CheckpointError(f"{path} is not a robustlab adversarial-examples file")
    expected = side.get("tensors_sha256")
    if expected is None:
        warnings.warn(f"{path} was saved without a checksum, so it cannot be verified against its "
                      "sidecar; save it again (evaluate --save-adv) to add one", stacklevel=2)
    elif hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"{path} does not match its sidecar {path.with_suffix('.json').name} "
                              "(sha256 differs): the file was modified after it was saved, or the "
                              "sidecar belongs to another file; save the examples again")
    try:
        threat = _threat(side)
    except RobustlabError as exc:
        raise CheckpointError(f"{path}: the sidecar's threat model is invalid: {exc}") from None
    if threat is None:
        warnings.warn(f"{path}: the sidecar records no eps/norm, so the examples cannot be checked "
                      "against their eps-ball", stacklevel=2)
    problem = _problem(t, side.get("n"), threat)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return t["x_adv"], t["y"], t["x"], side


def _given(eps: float | None, norm: str | None) -> dict | None:
    if eps is None and norm is None:
        return None
    return {"eps": eps, "norm": "linf" if norm is None else norm}


def _threat(side: dict) -> dict | None:
    """{"eps", "norm"} from the sidecar (or the attack settings in its meta), checked; or None."""
    threat = side.get("threat")
    if threat is None:  # the attack as `evaluate` ran it: {"settings": {"eps", "norm", ...}}
        attack = (side.get("meta") or {}).get("attack")
        settings = attack.get("settings") if isinstance(attack, dict) else None
        if not isinstance(settings, dict) or "eps" not in settings:
            return None
        threat = {"eps": settings["eps"], "norm": settings.get("norm", "linf")}
    if not isinstance(threat, dict) or not isinstance(threat.get("norm"), str):
        raise InputError(f"expected {{'eps': float, 'norm': 'linf' | 'l2'}}, got {threat!r}")
    norm = check_norm(threat["norm"])
    return {"eps": check_eps(threat.get("eps"), norm), "norm": norm}


def _problem(t: dict[str, torch.Tensor], n: Any, threat: dict | None) -> str | None:
    """What is wrong with the tensors x_adv, x, y (a message), or None."""
    x_adv, x, y = t["x_adv"], t["x"], t["y"]
    if y.dim() != 1 or x.dim() != 4:
        return (f"expected y of shape (N,) and x of shape (N, C, H, W), got {tuple(y.shape)} and "
                f"{tuple(x.shape)}")
    lengths = {"x_adv": x_adv.shape[0], "x": x.shape[0], "y": y.shape[0], "sidecar n": n}
    if len(set(lengths.values())) != 1:
        return "lengths differ: " + ", ".join(f"{k} {v}" for k, v in lengths.items())
    if x_adv.shape != x.shape:
        return f"x_adv has shape {tuple(x_adv.shape)} but x has {tuple(x.shape)}"
    dtypes = {"x_adv": torch.float32, "x": torch.float32, "y": torch.int64}
    for k, dt in dtypes.items():
        if t[k].dtype != dt:
            return f"{k} has dtype {t[k].dtype}, expected {dt}"
    for k in ("x_adv", "x"):
        if not bool(torch.isfinite(t[k]).all()):
            return f"{k} contains NaN or infinite values"
        if t[k].numel() and (float(t[k].min()) < 0 or float(t[k].max()) > 1):
            return (f"{k} has values outside [0, 1] (min {float(t[k].min()):.3g}, "
                    f"max {float(t[k].max()):.3g})")
    if threat is None or not x.numel():
        return None
    return _ball_problem(x_adv, x, threat["eps"], threat["norm"])


def _ball_problem(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> str | None:
    delta = (x_adv.double() - x.double()).flatten(1)  # (N, C*H*W), float64: no extra rounding
    if norm == "linf":
        dist, what = delta.abs().amax(1), "max |x_adv - x|"
    else:
        dist, what = torch.linalg.vector_norm(delta, ord=2, dim=1), "max ||x_adv - x||_2"
    worst = float(dist.max())
    if worst > eps + TOLERANCE:
        return f"x_adv leaves the eps-ball: {what} = {worst:.3g} > eps {eps:.3g} ({norm})"
    return None
