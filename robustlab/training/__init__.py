"""Trainers, one sub-package per thing trained: ``classifier`` (adversarial training and its
guards), ``contrastive`` (ACL pre-training) and ``purifier`` (Alg. 2 and NRP); the run folder
(``rundir``), resumable state (``state``), optimisers (``optim``) they share."""
from .classifier import (METHODS, GuardConfig, Method, MethodContext, Run, StepOutput, TrainConfig,
                         train)
from .contrastive import (PRETRAIN_METHODS, PretrainConfig, compare_pretraining, finetune,
                          pretrain)
from .purifier import PurifierConfig, train_purifier
from .rundir import RunDir
from .state import load_state, save_state

__all__ = ["GuardConfig", "METHODS", "Method", "MethodContext", "PRETRAIN_METHODS", "PretrainConfig",
           "PurifierConfig", "Run", "RunDir", "StepOutput", "TrainConfig", "compare_pretraining",
           "finetune", "load_state", "pretrain", "save_state", "train", "train_purifier"]
