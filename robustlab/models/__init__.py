"""Classifiers by name, the Normalize layer, feature extractors and checkpoints.

``create(name, num_classes, in_channels, width=..., mean=..., std=...)`` builds any model of
:data:`MODELS`; every classifier maps (B, C, H, W) images in [0, 1] to logits with its
normalisation inside, exposes ``blocks`` (its convolution blocks, for :func:`feature_extractor`)
and records how it was built (``robustlab_spec``) so that :func:`save`/:func:`load` need no pickle.

Bring your own: ``create("torchvision:resnet18", ...)``, ``timm:NAME`` and
``python:MODULE:FACTORY`` (``prefixes.py``); :func:`with_normalization` for a network that expects
normalised input; :func:`load_weights` for a plain state_dict file; :func:`open_model` for
anything ``--model`` accepts; ``save(model, path, source="python:MODULE:FACTORY")`` for a module
of your own.
"""
from __future__ import annotations

from . import preact_resnet, resnet, resnet_imagenet, small_cnn, vgg, vgg_imagenet  # noqa: F401,E501
from .checkpoint import load, read_meta, save
from . import prefixes  # noqa: F401  (torchvision:, timm:, python: names in MODELS)
from .external import SourceClassifier, trusting, with_normalization
from .factory import MODELS, attach_spec, create
from .features import FeatureExtractor, feature_extractor
from .normalize import NORMALIZATIONS, Normalize
from .own_module import from_module
from .sources import ModelSource, open_model
from .weights import load_weights, read_state_dict

__all__ = ["MODELS", "NORMALIZATIONS", "Normalize", "create", "save", "load", "read_meta",
           "attach_spec", "feature_extractor", "FeatureExtractor", "SourceClassifier",
           "with_normalization", "trusting", "ModelSource", "open_model", "from_module",
           "load_weights", "read_state_dict"]
