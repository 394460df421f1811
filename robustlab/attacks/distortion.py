"""Feature-distortion attack of seed 000 (the SSR purifier paper, Alg. 1): label-free.

Maximises ||P(x') - P(x)||_2 over the eps-ball, where P is a frozen feature extractor (by default
the first two convolution blocks of a dataset-trained VGG19). Defaults from REFERENCE.md: eps
16/255, 20 iterations, uniform random start, sign steps, clip to the ball and [0, 1]; the step,
eps/8, is ``geometry.DEFAULT_STEP["feature-distortion"]``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .._checks import check_eps, check_positive
from .engine import pgd
from ..defaults import default_step
from .geometry import check_norm


def feature_distortion(extractor: Callable[[Tensor], Tensor], x: Tensor, *, eps: float = 16 / 255,
                       step_size: float | None = None, steps: int = 20, random_start: bool = True,
                       generator: torch.Generator | None = None, norm: str = "linf",
                       amp_dtype: torch.dtype | str | None = None) -> Tensor:
    """Self-supervised feature-distortion perturbation (SSR purifier paper, Alg. 1).

    Args:
        extractor: frozen feature extractor P mapping [0, 1] images to (B, ...) features.
        x: (B, C, H, W) images in [0, 1]; never modified. No labels are used.
        eps: budget (default 16/255). step_size: None for the default (eps/8). steps: default 20.
        random_start: uniform start in the ball (default True; from x the gradient is 0).
        generator: torch.Generator for the random start. norm: "linf" (default) or "l2".
        amp_dtype: optional autocast dtype for the extractor's forward/backward.
    Returns:
        x_adv: same shape/dtype/device as x, in [0, 1], within eps of x.
    """
    if step_size is None:
        step_size = default_step("feature-distortion", check_eps(eps, check_norm(norm))) or 1.0
    else:
        check_positive("step_size", step_size)
    return pgd(extractor, x, None, eps=eps, step_size=step_size, steps=steps, norm=norm,
               random_start=random_start, objective="feature", generator=generator,
               amp_dtype=amp_dtype)
