"""Classifiers by name, the Normalize layer, feature extractors and checkpoints.

``create(name, num_classes, in_channels, width=..., mean=..., std=...)`` builds any model of
:data:`MODELS`; every classifier maps (B, C, H, W) images in [0, 1] to logits with its
normalisation inside, exposes ``blocks`` (its convolution blocks, for :func:`feature_extractor`)
and records how it was built (``robustlab_spec``) so that :func:`save`/:func:`load` need no pickle.
"""
from __future__ import annotations

from . import preact_resnet, resnet, resnet_imagenet, small_cnn, vgg, vgg_imagenet  # noqa: F401,E501
from .checkpoint import load, read_meta, save
from .factory import MODELS, attach_spec, create
from .features import FeatureExtractor, feature_extractor
from .normalize import Normalize

__all__ = ["MODELS", "Normalize", "create", "save", "load", "read_meta", "attach_spec",
           "feature_extractor", "FeatureExtractor"]
