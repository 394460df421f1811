"""The classifier trainer: one fixed loop (``trainer``), pluggable methods (``methods``: standard;
``adversarial``: FGSM, Fast-FGSM, PGD, TRADES, transfer-adversary injection; ``free``: Free-AT;
``yopo``: YOPO-m-n) and the guards that watch each epoch (``guards``: catastrophic and robust
overfitting)."""
from . import adversarial as _adversarial  # noqa: F401  (registers fgsm, fast-fgsm, pgd, ...)
from . import free as _free, yopo as _yopo  # noqa: F401  (registers free, yopo)
from .config import GuardConfig, TrainConfig
from .methods import METHODS, Method, MethodContext, StepOutput
from .trainer import Run, train

__all__ = ["GuardConfig", "METHODS", "Method", "MethodContext", "Run", "StepOutput",
           "TrainConfig", "train"]
