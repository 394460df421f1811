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


def check_amp(amp: Any, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``; fp16 needs a CUDA GPU (CPU autocast has no
    fast fp16 kernels and no gradient scaler worth the name: bf16 is the CPU's mixed precision)."""
    dtype = amp_dtype(amp)
    if dtype is torch.float16 and torch.device(device).type != "cuda":
        raise ConfigError(f"--amp fp16 needs a CUDA GPU (the device is {torch.device(device)}); "
                          "on a CPU use --amp bf16, or --amp none")
    return dtype


class GradScaling:
    """``loss.backward()`` and ``optimizer.step()``, through a GradScaler when training in fp16.

    With fp16 the loss is scaled before the backward pass (small gradients would underflow), the
    gradients are unscaled before anything reads them (clipping, logging), and a step whose
    gradients overflowed is skipped while the scale shrinks. bf16 and fp32 need none of it: every
    call here is then the plain one. ``state``/``load`` carry the scale across a resume (JSON).
    """

    def __init__(self, amp: Any, device: torch.device | str, *, enabled: bool | None = None):
        on = amp_dtype(amp) is torch.float16 if enabled is None else enabled
        self.scaler = torch.amp.GradScaler(torch.device(device).type) if on else None

    @property
    def enabled(self) -> bool:
        return self.scaler is not None

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients back to their true size (once per step, before clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state(self) -> dict[str, Any]:
        return {} if self.scaler is None else {
            k: (float(v) if torch.is_tensor(v) else v) for k, v in self.scaler.state_dict().items()}

    def load(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(dict(state))


def channels_last(module_or_x, on: bool):
    """``module_or_x`` in channels_last memory format when ``on`` (4-D tensors and modules)."""
    if not on:
        return module_or_x
    if isinstance(module_or_x, torch.nn.Module):
        return module_or_x.to(memory_format=torch.channels_last)
    if module_or_x.dim() == 4:
        return module_or_x.contiguous(memory_format=torch.channels_last)
    return module_or_x


def compiled(module: torch.nn.Module, on: bool) -> torch.nn.Module:
    """``torch.compile(module)`` when ``on``; the module itself otherwise. The compiled wrapper
    shares the module's parameters, so optimisers, checkpoints and attacks use the plain module."""
    # fallback_random: dropout and other random ops draw what eager mode draws from the seeded
    # global RNG (inductor's own RNG would not), so a compiled run keeps the plain run's masks,
    # its resume and its torchrun equivalence; they are a tiny part of any step's time
    return torch.compile(module, options={"fallback_random": True}) if on else module
