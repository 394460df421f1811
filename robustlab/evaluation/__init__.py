"""Evaluation: clean accuracy now; attacks, threat models and sweeps build on it."""
from .clean import accuracy, predict

__all__ = ["accuracy", "predict"]
