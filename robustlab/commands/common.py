"""Argument helpers shared by sub-commands."""
from __future__ import annotations

import argparse
from typing import Any

from ..config import parse_value, read_yaml_mapping
from ..errors import ConfigError


def size(text: str) -> int | float:
    """A count ("20000") or a fraction ("0.3")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None
    return int(value) if value.is_integer() and "." not in text else value


def number(text: str) -> float:
    """A number, also written as a fraction of 255 ("8/255") as the papers do."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number such as 0.031 or 8/255, got "
                                         f"{text!r}") from None


def numbers(text: str) -> list[float | int]:
    """Comma-separated numbers ("0,2/255,8/255"); whole numbers stay integers (steps)."""
    out: list[float | int] = []
    for part in text.split(","):
        part = part.strip()
        out.append(int(part) if part.isdigit() else number(part))
    return out


def val_size(text: str) -> int | float | str:
    """--val: a count, a fraction, or "split" (the dataset's own validation split)."""
    return text if text == "split" else size(text)


DATA_FLAGS = ("channels", "size", "split_sizes", "split_seed", "cache_dir")  # DataOptions fields


def add_data_args(p: argparse.ArgumentParser, split: bool = False,
                  with_size: bool = True) -> None:
    """--dataset, --data-root and the data options (DataOptions); ``with_size=False`` where the
    command has its own image-size flag (train-purifier's --image-size)."""
    g = p.add_argument_group("data (your own images: --dataset folder or npz with --data-root)")
    g.add_argument("--dataset", help="dataset name (see `robustlab list datasets`): a built-in set, "
                   "folder (one sub-folder of images per class) or npz (x uint8 NHWC, y labels)")
    g.add_argument("--data-root", default=None,
                   help="where the dataset is (default: system location, then download); folder: "
                   "the folder of class sub-folders, optionally under train/ val/ test/; npz: the "
                   ".npz file, or a folder of train.npz, val.npz, test.npz")
    if split:
        g.add_argument("--split", default="test", choices=["train", "val", "test"],
                       help="split to use (val: folder and npz data)")
    g.add_argument("--channels", type=int, metavar="{1,3}",
                   help="convert every image to 1 channel (luminance) or 3 (grey repeated), e.g. "
                   "a 3-channel model on Fashion-MNIST (default: the data's own; evaluating: "
                   "what the checkpoint was trained with)")
    if with_size:
        g.add_argument("--size", type=int, help="image side after resizing (default 32; "
                       "evaluating: what the checkpoint was trained with)")
    g.add_argument("--split-sizes", type=numbers, metavar="TRAIN,VAL,TEST",
                   help="folder/npz data without split sub-folders or files: the seeded "
                   "partition, as fractions (default 0.8,0.1,0.1) or counts "
                   "(50000,10000,13000)")
    g.add_argument("--split-seed", type=int, help="seed of that partition (default 0; separate "
                   "from --seed so that training and evaluation agree on the test images)")
    g.add_argument("--cache-dir", help="where folder and gtsrb data keep their decoded images "
                   "(default: DIR/.robustlab-cache beside the images, else the download cache)")


def data_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The data flags that were given, as a run config's ``data`` settings."""
    return {k: getattr(args, k) for k in DATA_FLAGS if getattr(args, k, None) is not None}


def data_load_args(args: argparse.Namespace, dataset: str, model: Any = None) -> dict[str, Any]:
    """The keyword arguments of ``robustlab.data.load`` for a command that evaluates ``model``:
    each data flag, else what the model's training run recorded (channels and size always, as
    they shape its input; the split settings when it trained on ``dataset``), else the default.
    The checkpoint's cache dir is never reused (it is a place on the machine that trained)."""
    from ..data import DataOptions

    module = getattr(model, "classifier", model)
    meta = (getattr(module, "robustlab_meta", None) or {}).get("meta", {}) or {}
    recorded = ((meta.get("config") or {}).get("data") or {}) if isinstance(meta, dict) else {}
    inherit = ("channels", "size") + (("split_sizes", "split_seed")
                                      if meta.get("dataset") == dataset else ())
    merged = {k: recorded.get(k) for k in inherit if recorded.get(k) is not None}
    merged.update(data_settings(args))
    return DataOptions(**merged).load_args()


def add_speed_args(p: argparse.ArgumentParser, *, config_fields: bool = False) -> None:
    """--amp, --channels-last, --compile: the one-GPU speed options. ``config_fields``: they are
    fields of a run's config (train-purifier, pretrain), so an absent flag stays None and leaves
    the --config file's value alone."""
    g = p.add_argument_group("speed (one GPU)")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], default=None if config_fields else
                   "none", help="autocast every forward and backward pass (the attack's step and "
                   "projection stay float32); fp16 needs a CUDA GPU, bf16 also runs on a CPU")
    g.add_argument("--channels-last", action="store_true", default=None if config_fields else
                   False, help="models and batches in channels_last memory format")
    g.add_argument("--compile", action="store_true", default=None if config_fields else False,
                   help="torch.compile the networks that are trained or attacked (the same "
                   "numbers, faster after the first batches); needs a C++ compiler on a CPU")


def check_amp_flag(amp: str | None, device_flag: str | None) -> None:
    """--amp fp16 needs a CUDA GPU: refused before any checkpoint or data is read."""
    from ..runtime import check_amp, resolve_device

    check_amp(amp or "none", resolve_device(device_flag))


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def load_yaml(path: str | None) -> dict[str, Any]:
    """The settings in --config (empty without one)."""
    return read_yaml_mapping(path) if path else {}


def apply_sets(cfg: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    """Apply ``key=value`` / ``a.b=value`` overrides (values parsed as YAML)."""
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        target = cfg
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key}: {part} is not a mapping")
        target[parts[-1]] = parse_value(text)
    return cfg


def add_optim_args(p: argparse.ArgumentParser) -> None:
    """Optimiser and learning-rate schedule flags (fields of TrainConfig and PretrainConfig)."""
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["cosine", "step", "constant"])
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--grad-clip", type=float)


def add_run_args(p: argparse.ArgumentParser, set_example: str) -> None:
    """The flags every training command shares: --set, runtime, --out, --resume, --overwrite."""
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override any setting, e.g. --set {set_example} (repeatable)")
    add_runtime_args(p)
    p.set_defaults(seed=None)  # the config's seed unless --seed is given
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")


def config_from_args(args: argparse.Namespace, fields: tuple[str, ...], required: tuple[str, ...],
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """--config YAML, then the flags that were given (``fields``: flags named as their settings),
    then ``extra`` (already merged settings), then --set; refuses a missing required setting."""
    cfg = load_yaml(args.config)
    for name in fields:
        value = getattr(args, name, None)
        if value is not None:
            cfg[name] = value
    for key, value in (extra or {}).items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    cfg = apply_sets(cfg, args.set)
    for name in required:
        if name not in cfg:
            raise ConfigError(f"--{name.replace('_', '-')} is required (or give it in --config)")
    return cfg


def add_model_source_args(p: argparse.ArgumentParser) -> None:
    """The flags that build a --model that is not a robustlab checkpoint: a plain state_dict
    (--arch), a network from torchvision/timm/your code (--weights), its shape and normalisation;
    --trust-code also applies to checkpoints of ``python:`` models (and --source, --extractor)."""
    g = p.add_argument_group(
        "bring your own model (--model torchvision:NAME, timm:NAME, python:MODULE:FACTORY, or a "
        "plain state_dict file with --arch)")
    g.add_argument("--arch", metavar="NAME", help="the network of a plain state_dict --model file "
                   "(.pt/.pth, or .safetensors without sidecar): a registered name (`robustlab "
                   "list models`), torchvision:NAME, timm:NAME or python:MODULE:FACTORY")
    g.add_argument("--weights", metavar="FILE", help="state_dict (.pt, .pth or .safetensors) for "
                   "a --model given by name")
    g.add_argument("--num-classes", type=int, metavar="K",
                   help="logits of the network (unset: what the weights hold, else the "
                   "network's own)")
    g.add_argument("--in-channels", type=int, metavar="C", help="image channels (unset: 3)")
    g.add_argument("--input-size", type=int, metavar="S", help="resize images to SxS inside "
                   "the model (e.g. 224 for an ImageNet network on 32x32 data)")
    g.add_argument("--mean", type=numbers, metavar="M[,M,M]",
                   help="per-channel mean the network expects (unset: no normalisation)")
    g.add_argument("--std", type=numbers, metavar="S[,S,S]", help="per-channel std")
    g.add_argument("--normalization", metavar="NAME",
                   help="named mean/std instead: imagenet, cifar10, cifar100, mnist, half, none")
    g.add_argument("--width", type=float, help="width multiplier of a registered --arch")
    g.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="keyword argument of the network's constructor (repeatable)")
    g.add_argument("--trust-code", action="store_true", help="allow python:MODULE:FACTORY and "
                   "checkpoints that need user code: imports and runs that module")
