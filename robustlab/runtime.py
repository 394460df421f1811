"""Where and how computation runs: the device, mixed precision and reproducible seed streams.

The lowest floor that touches torch: attacks, metrics, the trainers, evaluation and the commands
all take these from here, and this module imports nothing of robustlab but its errors.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from .errors import ConfigError

# every spelling of a mixed-precision setting -> the autocast dtype (None: full precision)
AMP_DTYPES: dict[str, torch.dtype | None] = {
    "none": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16}


def amp_dtype(value: Any) -> torch.dtype | None:
    """None / torch.bfloat16 / torch.float16, also from the strings none, bf16, fp16."""
    if value is None or value in (torch.bfloat16, torch.float16):
        return value
    if isinstance(value, str) and value.lower() in AMP_DTYPES:
        return AMP_DTYPES[value.lower()]
    raise ConfigError(f"amp_dtype must be one of None, torch.bfloat16, torch.float16 "
                      f"(or 'none', 'bf16', 'fp16'), got {value!r}")


def amp_context(amp: Any, device: torch.device | str):
    """An autocast context for ``amp`` (a name or dtype) on ``device``; a no-op for none."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None): CUDA when there is a GPU, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 9_176 + stream * 7_919 + 12_345) % (2**63 - 1)
