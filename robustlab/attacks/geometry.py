"""Threat geometry, written once: random start, ascent step, projection and clamp per norm.

Every attack, trainer and evaluator calls these (STYLE.md rule 3). Images are (B, C, H, W) in
[0, 1]; the step and projection run in float32 (or wider) even when the forward pass ran under
autocast (STYLE.md rule 6), and return tensors in that working dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_eps
from ..errors import UnknownNameError

NORMS = ("linf", "l2")
_TINY = 1e-12  # guards the l2 normalisation of all-zero gradients


def check_norm(norm: str) -> str:
    """Return ``norm`` if it is a known threat-model norm, else raise listing the known ones."""
    if norm not in NORMS:
        raise UnknownNameError(f"unknown norm {norm!r}. Known norms: {', '.join(NORMS)}")
    return norm


@dataclass(frozen=True)
class ThreatModel:
    """A threat model: the norm ("linf" or "l2") and the radius eps in [0, 1] pixel units."""

    norm: str = "linf"
    eps: float = 8 / 255

    def __post_init__(self) -> None:
        check_norm(self.norm)
        object.__setattr__(self, "eps", check_eps(self.eps, self.norm))


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the geometry computes in: float32, or wider if the input is wider."""
    return torch.promote_types(dtype, torch.float32)


def _per_sample_l2(t: Tensor) -> Tensor:
    """(B, ...) -> (B, 1, 1, 1)-broadcastable l2 norms."""
    n = torch.linalg.vector_norm(t.flatten(1), ord=2, dim=1)
    return n.view(-1, *([1] * (t.dim() - 1)))


def random_start(x: Tensor, eps: float, norm: str,
                 generator: torch.Generator | None = None) -> Tensor:
    """A uniform random point of the eps-ball around ``x``, clamped to [0, 1].

    linf: x + U(-eps, eps) per pixel. l2: x + eps * r * u with u a uniform direction (a normalised
    gaussian) and r = U^(1/d), d = C*H*W, which is uniform in the l2 ball. Clamping to [0, 1] only
    shrinks each coordinate of the perturbation, so the result stays in the ball.

    Args:
        x: (B, C, H, W) clean images in [0, 1].
        eps: the radius. norm: "linf" or "l2".
        generator: the source of randomness (its device may differ from x's); None: the global one.
    Returns:
        (B, C, H, W) tensor in the working dtype (float32 or wider), on x's device.
    """
    check_norm(norm)
    dt = work_dtype(x.dtype)
    dev = generator.device if generator is not None else x.device
    xw = x.detach().to(dt)
    # Draws are made in logical (contiguous) order, so the result does not depend on x's memory
    # format, then laid out like x (channels_last stays channels_last).
    fmt = _memory_format(x)
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=dev, dtype=dt)
        delta = ((2 * u - 1) * eps).to(x.device, memory_format=fmt)
    else:
        d = x[0].numel()
        g = torch.randn(x.shape, generator=generator, device=dev, dtype=dt)
        r = torch.rand((x.shape[0],), generator=generator, device=dev, dtype=dt)
        radius = (eps * r.pow(1.0 / d)).view(-1, *([1] * (x.dim() - 1)))
        delta = (g / _per_sample_l2(g).clamp_min(_TINY) * radius).to(x.device, memory_format=fmt)
    return (xw + delta).clamp_(0.0, 1.0)


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() \
            and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def ascent_step(x_adv: Tensor, grad: Tensor, step_size: float, norm: str) -> Tensor:
    """One steepest-ascent step of the given norm: x_adv + step_size * direction(grad).

    linf: direction sign(grad) (FGSM/PGD, Goodfellow et al. 2015, Madry et al. 2018);
    l2: grad / ||grad||_2 per sample (zero for an all-zero gradient). Works on an image or a
    perturbation alike; returns a new tensor in the working dtype. Project afterwards.
    """
    check_norm(norm)
    dt = work_dtype(x_adv.dtype)
    g = grad.to(dt)
    if norm == "linf":
        direction = g.sign()
    else:
        direction = g / _per_sample_l2(g).clamp_min(_TINY)
    return x_adv.to(dt) + step_size * direction


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Project ``x_adv`` onto the eps-ball around ``x`` (of the given norm), then clamp to [0, 1].

    linf: clip each pixel to [x - eps, x + eps]. l2: delta * min(1, eps / ||delta||_2) per sample.
    Clamping to [0, 1] after the ball projection cannot leave the ball (x is in [0, 1]).
    Returns a new tensor in the working dtype.
    """
    check_norm(norm)
    dt = work_dtype(x_adv.dtype)
    xw = x.to(dt)
    delta = x_adv.to(dt) - xw
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / _per_sample_l2(delta).clamp_min(_TINY)).clamp_max(1.0)
        delta = delta * scale
    return (xw + delta).clamp_(0.0, 1.0)
