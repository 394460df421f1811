"""Trainers: classifiers with pluggable (adversarial) methods, and their run directories."""
from . import adversarial as _adversarial  # noqa: F401  (registers fgsm, fast-fgsm, pgd, ...)
from .config import GuardConfig, TrainConfig
from .contrastive_compare import compare_pretraining
from .contrastive_finetune import finetune
from .contrastive_methods import PRETRAIN_METHODS
from .contrastive_train import PretrainConfig, pretrain
from .methods import METHODS, Method, MethodContext, StepOutput
from .purifier import train_purifier
from .purifier_config import PurifierConfig
from .rundir import RunDir
from .state import load_state, save_state
from .trainer import Run, train

__all__ = ["GuardConfig", "METHODS", "Method", "MethodContext", "PRETRAIN_METHODS", "PretrainConfig",
           "PurifierConfig", "Run", "RunDir", "StepOutput", "TrainConfig", "compare_pretraining",
           "finetune", "load_state", "pretrain", "save_state", "train", "train_purifier"]
