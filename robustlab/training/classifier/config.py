"""The classifier trainer's configuration (one frozen dataclass, checked on construction)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from ..._checks import check_eps, check_int, check_positive, is_size
from ...errors import ConfigError
from ...data.options import DataOptions
from ..checks import check_model_kwargs, check_val, data_options
from .methods import check_method_config


@dataclass(frozen=True)
class GuardConfig:
    """Checks run after every epoch of adversarial training (``robustlab.training.classifier.guards``).

    overfit_check: catastrophic overfitting (Wong et al. 2020): PGD on a fixed training batch of
        ``overfit_n`` images; a fall of more than ``overfit_drop`` (0.2 = 20 points) in its
        accuracy from the previous epoch marks the epoch, and so does FGSM accuracy on the same
        batch above the PGD accuracy by more than ``overfit_gap`` (Kim et al. 2020: the sign of
        overfitting within the first epoch, which no fall between epochs shows). None: on for
        every method but standard.
    overfit_action: "restore" (the previous epoch's weights are put back and the run stops) or
        "warn" (the epoch is marked, a warning issued, and training goes on).
    robust_val: robust overfitting (Rice et al. 2020): PGD accuracy on up to ``robust_val_n``
        held-out validation images each epoch; the best epoch is kept as ``best.safetensors``.
        None: on for every method but standard when there is a validation split.
    eps: the guards' PGD budget (None: the method's eps, else 8/255); ``steps`` PGD steps of
        pgd's default step (``attacks.DEFAULT_STEP``, eps/4) from a random start (the same start
        every epoch, so epochs are comparable).
    """

    overfit_check: Optional[bool] = None
    overfit_drop: float = 0.2
    overfit_gap: float = 0.3
    overfit_action: Literal["restore", "warn"] = "restore"
    overfit_n: int = 512
    robust_val: Optional[bool] = None
    robust_val_n: int = 1000
    eps: Optional[float] = None
    steps: int = 10

    def __post_init__(self) -> None:
        if not 0 < check_positive("guards.overfit_gap", self.overfit_gap) <= 1:
            raise ConfigError(f"guards.overfit_gap is a fraction in (0, 1], got {self.overfit_gap}")
        if not 0 < check_positive("guards.overfit_drop", self.overfit_drop) <= 1:
            raise ConfigError(f"guards.overfit_drop is a fall in accuracy in (0, 1] (0.2 = 20 "
                              f"points), got {self.overfit_drop!r}")
        check_int("guards.overfit_n", self.overfit_n)
        check_int("guards.robust_val_n", self.robust_val_n)
        check_int("guards.steps", self.steps)
        if self.eps is not None:
            check_eps(self.eps, name="guards.eps", positive=True)
        if self.overfit_action not in ("restore", "warn"):
            raise ConfigError(f"guards.overfit_action must be 'restore' or 'warn', got "
                              f"{self.overfit_action!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the weights a run ends with (saved as ``config.json``).

    Seed-report settings: the CIFAR classifiers use SGD lr 0.1, cosine, 100 epochs; the traffic-sign
    ResNet18 uses Adam lr 5e-4, batch 128 (REFERENCE.md). The default (Adam 1e-3, no weight decay)
    is the setting that trains every registered model; SGD 0.1 leaves small-cnn (no batch norm)
    at chance on Fashion-MNIST.
    """

    dataset: str
    model: str
    epochs: int = 10
    batch_size: int = 128
    # Defaults that train any registered model (with or without batch norm) out of the box. The
    # seeds' settings are explicit choices: CIFAR classifiers --optimizer sgd --lr 0.1
    # --weight-decay 5e-4; the traffic-sign ResNet18 Adam 5e-4 (recipes/traffic-signs/).
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of the run
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    grad_clip: Optional[float] = None
    width: float = 1.0
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    subset: Optional[Union[int, float]] = None  # count or fraction of the training split
    # validation hold-out (count or fraction), 0 for none, "split": the dataset's own val split
    val: Union[int, float, str] = 0.1
    augment: Optional[str] = None                # None: the dataset's default preset
    method: str = "standard"
    method_args: dict[str, Any] = field(default_factory=dict)
    guards: GuardConfig = field(default_factory=GuardConfig)  # after-epoch checks (see above)
    init: Optional[str] = None                   # a checkpoint whose weights start the run
    linear_probe: bool = False                   # train only the final linear layer (frozen body)
    seed: int = 0
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    # how the dataset is loaded: channels, size, the split of folder/npz data (DataOptions)
    data: DataOptions = field(default_factory=DataOptions)

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs)
        check_int("batch_size", self.batch_size)
        check_positive("lr", self.lr)
        check_positive("momentum", self.momentum, allow_zero=True)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_positive("gamma", self.gamma)
        check_positive("warmup_epochs", self.warmup_epochs, allow_zero=True)
        check_positive("width", self.width)
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError(f"milestones are fractions of the run in (0, 1), got {self.milestones}")
        if self.subset is not None and not is_size(self.subset):
            raise ConfigError(f"subset must be a count >= 1 or a fraction in (0, 1], got {self.subset!r}")
        check_val(self.val)
        if isinstance(self.guards, dict):  # TrainConfig(guards={...}) from Python
            object.__setattr__(self, "guards", GuardConfig(**self.guards))
        object.__setattr__(self, "data", data_options(self.data))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")

        check_model_kwargs(self.model_kwargs)
        # method_args stays the plain mapping config.json saves, but is checked against the
        # method's typed Args here, so a typo fails before any data is loaded or file written;
        # then the options the method cannot honour (e.g. free/yopo with --amp fp16)
        check_method_config(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
