"""Threat models: which module the attacker differentiates through, and what is scored.

| name      | the attacker differentiates through                         | scored on            |
| white-box | the evaluated model itself (purifier + classifier together)   | the same model       |
| transfer  | a separate source model                                      | the evaluated model  |
| gray-box  | the undefended classifier only (the SSR report's setting)     | purifier + classifier|
| bpda      | classifier, purifier's backward pass replaced by identity     | purifier + classifier|
| eot       | the expectation over a stochastic defence's randomness       | the same stochastic defence |

(DESIGN.md; Athalye et al. 2018 for BPDA and EOT.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..purifiers import Purified
from ..registry import Registry


class BPDAIdentity(nn.Module):
    """Forward: the purifier. Backward: identity (the straight-through estimator of BPDA)."""

    def __init__(self, purifier: nn.Module) -> None:
        super().__init__()
        self.purifier = purifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.purifier(x) - x).detach()


class KeepDropout(nn.Module):
    """Runs ``module`` with its dropout layers active even in eval mode (a stochastic defence)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drops = [m for m in self.module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
        modes = [m.training for m in drops]
        for m in drops:
            m.train(True)
        try:
            return self.module(x)
        finally:
            for m, mode in zip(drops, modes):
                m.train(mode)


class EOT(nn.Module):
    """Expectation over transformation: log of the mean softmax over ``samples`` stochastic passes.

    The k passes run as one batch of k*B images. Cross-entropy on these log-probabilities is
    -log E[p_y], whose gradient is a (probability-weighted) average of the per-pass gradients.
    """

    def __init__(self, model: nn.Module, samples: int = 10) -> None:
        super().__init__()
        if samples < 1:
            raise ConfigError(f"eot_samples must be >= 1, got {samples}")
        self.model, self.samples = model, samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        logits = self.model(x.repeat(self.samples, 1, 1, 1)).float()  # (k*B, K)
        logp = torch.log_softmax(logits, dim=1).view(self.samples, b, -1)
        return torch.logsumexp(logp, dim=0) - torch.log(torch.tensor(float(self.samples)))


@dataclass(frozen=True)
class Threat:
    """attacked(model, source, eot_samples) -> module to differentiate through;
    scored(model) -> module whose predictions count; stochastic: whether scoring is random."""

    attacked: Callable[..., nn.Module]
    scored: Callable[[nn.Module], nn.Module]
    help: str
    stochastic: bool = False
    early_stop_ok: bool = True  # the attacked module's prediction equals the scored one's


THREAT_MODELS: Registry[Threat] = Registry("threat model")


def _purified(model: nn.Module, threat: str) -> Purified:
    if not isinstance(model, Purified):
        raise ConfigError(f"the {threat} threat model needs a defended model (a purifier and a "
                          "classifier: --purifier P --model C); for an undefended model use white-box")
    return model


def _transfer_source(model, source, eot_samples):
    if source is None:
        raise ConfigError("the transfer threat model needs a source model (--source CKPT) on which "
                          "the adversarial examples are crafted")
    return source


def _register(name: str, threat: Threat) -> None:
    THREAT_MODELS.register(name, help=threat.help)(threat)


_same = lambda model: model  # noqa: E731
_register("white-box", Threat(lambda model, source, k: model, _same,
                              "gradients through the evaluated model itself (purifier included)"))
_register("transfer", Threat(_transfer_source, _same,
                             "crafted on a separate source model, scored on the evaluated one",
                             early_stop_ok=False))
_register("gray-box", Threat(lambda model, source, k: _purified(model, "gray-box").classifier, _same,
                             "crafted on the bare classifier, scored through purifier + classifier",
                             early_stop_ok=False))
_register("bpda", Threat(
    lambda model, source, k: Purified(BPDAIdentity(_purified(model, "bpda").purifier),
                                      model.classifier),
    _same, "classifier gradients with the purifier's backward pass replaced by identity"))
_register("eot", Threat(lambda model, source, k: EOT(KeepDropout(model), k), KeepDropout,
                        "expectation over the defence's randomness (dropout kept on); scored on "
                        "the same stochastic defence", stochastic=True, early_stop_ok=False))
