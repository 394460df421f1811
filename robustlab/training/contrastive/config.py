"""Contrastive pre-training's configuration (one frozen dataclass, checked on construction)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from ..._checks import check_eps, check_int, check_positive, is_size
from ...config import from_dict
from ...errors import ConfigError
from ...data.options import DataOptions
from ..checks import check_model_kwargs, check_val, data_options
from .methods import PRETRAIN_METHODS
from ...attacks.objectives import TEMPERATURE


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that decides the encoder a pre-training run ends with (saved as ``config.json``).

    ACL (Jiang et al. 2020): NT-Xent temperature 0.5, 128-d projection, PGD on NT-Xent with eps
    8/255, step 2/255, 5 steps; the seed report pre-trains for 10 epochs. Optimiser fields mean what
    they mean in :class:`TrainConfig`. ``val`` is held out exactly as the classifier trainer does
    (same seed), so pre-training never sees the images fine-tuning validates on.
    """

    dataset: str
    model: str
    method: str = "a2s"
    epochs: int = 10
    batch_size: int = 256
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.5
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    grad_clip: Optional[float] = None
    width: float = 1.0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    subset: Optional[Union[int, float]] = None
    val: Union[int, float, str] = 0.1      # as TrainConfig.val ("split": the dataset's own)
    augment: Optional[str] = None          # None: "simclr", or "simclr-signs" for no-flip data
    temperature: float = TEMPERATURE
    proj_dim: int = 128
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 5
    # the views' adversary: "pgd" (ACL's) or "yopo" (YOPO-m-n on NT-Xent: yopo_m full passes,
    # yopo_n updates of step_size through the first layer after each; steps then unused)
    adversary: Literal["pgd", "yopo"] = "pgd"
    yopo_m: int = 5
    yopo_n: int = 3
    seed: int = 0
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    data: DataOptions = field(default_factory=DataOptions)  # as TrainConfig.data

    def __post_init__(self) -> None:
        PRETRAIN_METHODS.get(self.method)  # unknown names fail here, listing the known ones
        check_int("epochs", self.epochs)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 2:
            raise ConfigError(f"batch_size must be an integer >= 2 for contrastive pre-training "
                              f"(NT-Xent uses the other images of the batch as negatives), got "
                              f"{self.batch_size!r}; SimCLR/ACL use 256-512")
        for name in ("lr", "gamma", "width", "temperature", "step_size"):
            check_positive(name, getattr(self, name))
        check_eps(self.eps, positive=True)
        for name in ("momentum", "weight_decay", "warmup_epochs"):
            check_positive(name, getattr(self, name), allow_zero=True)
        check_int("proj_dim", self.proj_dim)
        check_int("steps", self.steps)
        self._check_adversary()
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError(f"milestones are fractions of the run in (0, 1), got "
                              f"{self.milestones}")
        if self.subset is not None and not is_size(self.subset):
            raise ConfigError(f"subset must be a count >= 1 or a fraction in (0, 1], got "
                              f"{self.subset!r}")
        check_val(self.val)
        object.__setattr__(self, "data", data_options(self.data))
        check_int("seed", self.seed, 0)
        check_model_kwargs(self.model_kwargs)

    def _check_adversary(self) -> None:
        if self.adversary not in ("pgd", "yopo"):
            raise ConfigError(f"adversary must be 'pgd' (ACL's) or 'yopo' (YOPO-m-n), got "
                              f"{self.adversary!r}")
        check_int("yopo_m (YOPO's outer iterations: full passes per batch)", self.yopo_m)
        check_int("yopo_n (YOPO's inner updates through the first layer per pass)", self.yopo_n)
        if self.adversary != "pgd" and not PRETRAIN_METHODS.get(self.method).adversarial:
            raise ConfigError(f"--adversary {self.adversary} attacks the views of a2a, a2s or "
                              f"dual-bn; method {self.method!r} trains on clean views only")
        if self.adversary == "yopo" and getattr(self, "compile", False):
            raise ConfigError("--adversary yopo cannot attack a compiled model (--compile): it "
                              "stops the forward pass after the first layer from a module hook, "
                              "which a compiled graph does not run; drop --compile")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PretrainConfig":
        return from_dict(cls, data, where="pre-training config")
