"""Adversarial contrastive pre-training (SimCLR; ACL's A2A, A2S and dual-BN): the methods
(``methods``), the projection head (``projection``), dual batch norm (``dual_bn``), the loop
(``trainer``), fine-tuning an encoder (``finetune``) and pre-trained vs. from scratch
(``compare``)."""
from .compare import compare_pretraining
from .config import PretrainConfig
from .finetune import finetune
from .methods import PRETRAIN_METHODS
from .trainer import pretrain

__all__ = ["PRETRAIN_METHODS", "PretrainConfig", "compare_pretraining", "finetune", "pretrain"]
