"""Evaluation: clean and adversarial accuracy under named threat models, sweeps over attack
strength, sanity checks against gradient masking, and crafted examples saved for transfer matrices."""
from .advstore import load_adversarial, save_adversarial
from ..metrics import accuracy, predict
from .harness import evaluate, score_adversarial
from .result import EvalResult
from .sanity import monotonic_warnings
from .specs import AttackSpec
from .sweeps import save_sweep, sweep
from .threats import EOT, THREAT_MODELS, BPDAIdentity, KeepDropout

__all__ = ["AttackSpec", "BPDAIdentity", "EOT", "EvalResult", "KeepDropout", "THREAT_MODELS",
           "accuracy", "evaluate", "load_adversarial", "monotonic_warnings", "predict",
           "save_adversarial", "save_sweep", "score_adversarial", "sweep"]
