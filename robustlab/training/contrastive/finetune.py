"""Fine-tuning from a pre-trained encoder: a check that the backbone fits, then the usual trainer.

The encoder written by :func:`~robustlab.training.contrastive.pretrain` is a plain
classifier checkpoint, so fine-tuning is ``train(TrainConfig(..., init=encoder))`` with any
method of ``METHODS`` ("standard" as in the seed report, "trades" as in ACL) and ``linear_probe``
for a frozen encoder. :func:`check_encoder_fits` turns a mismatch into a message that names both
architectures and the flags that would match.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import models as rl_models
from ...data import dataset_info
from ...errors import CheckpointError
from ..classifier.config import TrainConfig
from ..classifier.trainer import train
from ..splits import given_data


_NOT_STRUCTURAL = ("mean", "std", "pretrained")  # options that do not change the weights' shapes


def _describe(name: str, kw: dict[str, Any]) -> str:
    return (f"{name} (width {kw.get('width')}, {kw.get('in_channels')} input channel(s), "
            f"{kw.get('num_classes')} classes)")


def check_encoder_fits(encoder: str | Path, cfg: TrainConfig, data_root: str | None = None,
                       data: Any = None) -> dict[str, Any]:
    """Raise CheckpointError unless the checkpoint ``encoder`` has the backbone ``cfg`` asks for.

    Compares the architecture name, width, input channels (after ``cfg.data.channels``), number
    of classes and the model's own options; the channels and classes come from ``data`` when the
    run is handed its data, else from ``cfg.dataset`` (at ``data_root`` for folder/npz data).
    Returns the checkpoint's sidecar.
    """
    meta = rl_models.read_meta(encoder)
    if data is not None:
        info = {"channels": data.channels, "num_classes": data.num_classes}
    else:
        args = cfg.data.load_args()
        info = dataset_info(cfg.dataset, args.pop("channels"), data_root, **args)
    have = meta["kwargs"]
    want = {"width": float(cfg.width), "in_channels": info["channels"],
            "num_classes": info["num_classes"]}
    diffs = [k for k, v in want.items() if have.get(k) != v]
    diffs += [k for k, v in cfg.model_kwargs.items() if k in have and have[k] != v
              and k not in _NOT_STRUCTURAL]
    if meta["name"] != cfg.model or diffs:
        hint = f"--model {meta['name']} --width {have.get('width')}"
        raise CheckpointError(
            f"the backbone does not match: {encoder} holds an encoder pre-trained as "
            f"{_describe(meta['name'], have)}, but fine-tuning asks for "
            f"{_describe(cfg.model, {**want, 'width': cfg.width})} on {cfg.dataset}"
            + (f" (differs in: {', '.join(diffs)})" if diffs else "")
            + f". Fine-tune with {hint} on a dataset of the same shape, or pre-train a "
              f"{cfg.model} encoder.")
    return meta


def finetune(cfg: TrainConfig, out: str | Path, **train_kwargs: Any) -> dict[str, Any]:
    """Train ``cfg`` (whose ``init`` is a pre-trained encoder) after checking the backbone fits.

    Any ``METHODS`` entry works (``cfg.method``); ``cfg.linear_probe`` trains only the final
    Linear on top of the frozen encoder. Keyword arguments go to :func:`train`. Returns its final
    metrics line.
    """
    if not cfg.init:
        raise CheckpointError("finetune needs cfg.init: the encoder checkpoint to start from "
                              "(<pretrain run>/encoder.safetensors)")
    if train_kwargs.get("data") is not None:  # converted once, for the check and the run
        train_kwargs["data"] = given_data(cfg, train_kwargs["data"])
    check_encoder_fits(cfg.init, cfg, train_kwargs.get("data_root"), train_kwargs.get("data"))
    return train(cfg, out, **train_kwargs)
