"""The classifier trainer: one fixed loop (``trainer``), pluggable methods (``methods``: standard;
``adversarial``: FGSM, Fast-FGSM, PGD, TRADES, transfer-adversary injection) and the guards that
watch each epoch (``guards``: catastrophic and robust overfitting)."""
from . import adversarial as _adversarial  # noqa: F401  (registers fgsm, fast-fgsm, pgd, ...)
from .config import GuardConfig, TrainConfig
from .methods import METHODS, Method, MethodContext, StepOutput
from .trainer import Run, train

__all__ = ["GuardConfig", "METHODS", "Method", "MethodContext", "Run", "StepOutput",
           "TrainConfig", "train"]
