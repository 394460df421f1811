"""Crafted adversarial examples on disk, so one attack run can be scored on many models
(the SSR report's Tables 1 and 2 are such a matrix). safetensors + a JSON sidecar; no pickle."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._io import atomic_path, provenance, write_json
from ..errors import CheckpointError

FORMAT = "robustlab-adversarial-examples"


def save_adversarial(path: str | Path, x_adv: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                     **meta: Any) -> Path:
    """Write ``path`` (.safetensors: x_adv, y, and the clean x for reference) and its .json."""
    path = Path(path).with_suffix(".safetensors")
    tensors = {"x_adv": x_adv.detach().float().cpu().contiguous(),
               "x": x.detach().float().cpu().contiguous(), "y": y.detach().long().cpu().contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    write_json(path.with_suffix(".json"), {"format": FORMAT, "n": len(y), "meta": meta,
                                           "provenance": provenance()})
    return path


def load_adversarial(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(x_adv, y, x, sidecar) from a file written by :func:`save_adversarial`."""
    path = Path(path).with_suffix(".safetensors")
    try:
        side = json.loads(path.with_suffix(".json").read_text())
        t = load_file(str(path))
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read adversarial examples {path}: {exc}") from None
    if side.get("format") != FORMAT or set(t) != {"x_adv", "x", "y"}:
        raise CheckpointError(f"{path} is not a robustlab adversarial-examples file")
    return t["x_adv"], t["y"], t["x"], side
