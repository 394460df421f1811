"""Purifier throughput: images per second of each purifier's forward pass, and its cost as a ratio
of the classifier's forward pass on the same batch (the price a defended model pays per image).

After a warm-up, repeats are interleaved (classifier, purifier 1, purifier 2, ..., classifier, ...)
so that drifting machine load hits every module alike; medians are reported. Inference only
(eval mode, ``torch.no_grad``), the same input batch for every module.

    python benchmarks/purifier_throughput.py --classifier runs/reproduce-quick/ssr-purifier/steps/classifier-resnet18-ID/model.safetensors \
        --purifier ours=runs/.../purifier-b3-ID/purifier.safetensors --purifier nrp=runs/.../purifier-nrp-ID/purifier.safetensors
    python benchmarks/purifier_throughput.py --arch unet-b --arch nrp --width 0.25 --repeats 3   # untrained

Prints a Markdown table; ``--json PATH`` also writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch import nn

from attack_speed import timed  # the same synchronised wall-clock timer (benchmarks/ is on the path)
from robustlab import models
from robustlab.purifiers import create_purifier


def seconds(module: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    """Wall time of one forward pass of ``module`` on ``x``."""
    with torch.no_grad():
        return timed(lambda: module(x), device)[0]


def load_modules(args: argparse.Namespace, channels: int) -> dict[str, nn.Module]:
    mods: dict[str, nn.Module] = {}
    for item in args.purifier:
        name, _, path = item.partition("=") if "=" in item else (item, "", item)
        mods[name] = models.load(path)
    for arch in args.arch:
        kw = {"n_blocks": args.nrp_blocks} if arch == "nrp" else {}
        mods[f"{arch} (untrained)"] = create_purifier(arch, channels, width=args.width, **kw)
    if not mods:
        raise SystemExit("give at least one --purifier NAME=CKPT or --arch NAME")
    return mods


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classifier", help="classifier checkpoint (default: an untrained resnet18)")
    p.add_argument("--model", default="resnet18", help="classifier built when --classifier is absent")
    p.add_argument("--purifier", action="append", default=[], metavar="NAME=CKPT")
    p.add_argument("--arch", action="append", default=[], help="untrained purifier by name")
    p.add_argument("--width", type=float, default=0.25, help="width of --arch / --model modules")
    p.add_argument("--nrp-blocks", type=int, default=2)
    p.add_argument("--channels", type=int, default=1, help="image channels when nothing is loaded")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.classifier:
        classifier = models.load(args.classifier)
        channels = classifier.in_channels
    else:
        channels = args.channels
        classifier = models.create(args.model, num_classes=10, in_channels=channels, width=args.width)
    mods = {"classifier": classifier, **load_modules(args, channels)}
    for m in mods.values():
        m.to(device).eval()
    x = torch.rand(args.batch, channels, args.size, args.size,
                   generator=torch.Generator().manual_seed(0)).to(device)
    times: dict[str, list[float]] = {k: [] for k in mods}
    for r in range(args.warmup + args.repeats):
        for name, m in mods.items():  # interleaved
            t = seconds(m, x, device)
            if r >= args.warmup:
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [{"module": k, "median_s": med[k], "images_per_s": args.batch / med[k],
             "cost_vs_classifier": med[k] / med["classifier"],
             "params": sum(q.numel() for q in mods[k].parameters())} for k in mods]
    print(f"batch {args.batch} x {channels}x{args.size}x{args.size} on {device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats "
          f"after {args.warmup} warm-up")
    print("| module | parameters | images/s | forward time vs classifier |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['module']} | {row['params']:,} | {row['images_per_s']:.0f} | "
              f"{row['cost_vs_classifier']:.2f}x |")
    result = {"batch": args.batch, "device": str(device), "threads": torch.get_num_threads(),
              "repeats": args.repeats, "rows": rows}
    if args.json:
        from robustlab._io import write_json

        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
