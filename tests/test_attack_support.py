"""Shared helpers for the attack tests (tiny models, synthetic data, call counters); no tests."""
from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from robustlab.attacks import ATTACKS

K, C, HW = 4, 3, 8  # classes, channels, image side


def make_data(n: int, seed: int = 0, k: int = K, c: int = C, hw: int = HW):
    """Separable synthetic images: grey noise around 0.5, class j brightens quadrant j."""
    g = torch.Generator().manual_seed(seed)
    x = 0.45 + 0.1 * torch.rand(n, c, hw, hw, generator=g)
    y = torch.arange(n) % k
    h = hw // 2
    for j in range(k):
        r, q = divmod(j, 2)
        x[y == j, :, r * h:(r + 1) * h, q * h:(q + 1) * h] += 0.2
    return x.clamp(0, 1), y


class TinyCNN(nn.Module):
    """conv-BN-ReLU block (the "extractor"), pooled, dropout, linear head."""

    def __init__(self, c: int = C, k: int = K, width: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width),
                                      nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.1),
                                  nn.Linear(width * 4, k))

    def forward(self, x):
        return self.head(self.features(x))


def trained_cnn(seed: int = 0, steps: int = 40) -> TinyCNN:
    """A fresh TinyCNN with weights trained a few Adam steps on make_data (clean accuracy ~1 on
    held-out data). The weights are trained once per (seed, steps) and cached."""
    model = TinyCNN()
    model.load_state_dict(_trained_state(seed, steps))
    return model.eval()


@functools.lru_cache(maxsize=None)
def _trained_state(seed: int, steps: int) -> dict:
    torch.manual_seed(seed)
    model = TinyCNN()
    x, y = make_data(32, seed=seed + 100)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Counting(nn.Module):
    """Wraps a model; counts forward calls and forwarded samples; can raise on the n-th call."""

    def __init__(self, inner: nn.Module, fail_at: int | None = None) -> None:
        super().__init__()
        self.inner, self.fail_at = inner, fail_at
        self.calls = 0
        self.samples = 0

    def forward(self, x):
        self.calls += 1
        self.samples += x.shape[0]
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom inside the model")
        return self.inner(x)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# Cheap per-attack settings for the contract tests; unknown (later) attacks get {}.
CHEAP = {
    "pgd": {"steps": 4},
    "feature-distortion": {"steps": 4},
    "autoattack": {"version": "custom", "attacks": ("apgd-ce", "apgd-t", "fab-t", "square"),
                   "n_iter": 4, "n_queries": 10},
}


def settings_for(name: str, eps: float, norm: str = "linf", seed: int = 0) -> dict:
    """Settings accepted by attack ``name``: eps, norm, seed where it has them, plus CHEAP."""
    fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).settings)}
    s = {"eps": eps, "norm": norm, "seed": seed}
    s = {k: v for k, v in s.items() if k in fields}
    s.update({k: v for k, v in CHEAP.get(name, {}).items() if k in fields})
    return s


def model_for(name: str, model: TinyCNN) -> nn.Module:
    """The classifier, or its feature block for attacks whose model is an extractor."""
    return model.features if ATTACKS.get(name).model_role == "extractor" else model


def snapshot(model: nn.Module):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])
