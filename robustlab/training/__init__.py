"""Trainers: classifiers with pluggable (adversarial) methods, and their run directories."""
from .config import TrainConfig
from .methods import METHODS, Method, MethodContext, StepOutput
from .rundir import RunDir
from .state import load_state, save_state
from .trainer import Run, train

__all__ = ["METHODS", "Method", "MethodContext", "Run", "RunDir", "StepOutput", "TrainConfig",
           "load_state", "save_state", "train"]
