"""Speed of robustlab's PGD against its bound (and torchattacks when installed), in one run.

On the same model and batch, after a warm-up, repeats are interleaved of:
  (a) the bound: ``steps`` forward+backward passes with gradients for the input only,
  (b) robustlab ``pgd(steps=steps)``, full loop,
  (c) robustlab ``pgd(steps=steps, early_stop=True)``,
  (d) ``torchattacks.PGD(steps=steps)`` when ``import torchattacks`` works (optional).
Median times are printed with their ratio to the bound, plus the robust accuracy of each attack.

The model is QUICKLY TRAINED (``--train-steps`` Adam steps, batch 64, on robustlab's generated
``synthetic`` dataset) and attacked on a batch of its test split; it is undefended, so PGD should
drive its robust accuracy towards 0. With ``--train-steps 0`` (or without robustlab.data) it is
UNTRAINED and the labels are its own clean predictions (clean accuracy 100% by construction).
The lead runs the full-size measurement (default: CIFAR-style ResNet18, batch 32, 3x32x32)::

    python benchmarks/attack_speed.py --device cuda --amp bf16 --channels-last
    python benchmarks/attack_speed.py --model small-cnn --width 0.25 --repeats 1   # smoke test
    python benchmarks/attack_speed.py --checkpoint runs/std/model.safetensors \
        --batch 256 --eps 0.1 --steps 20      # a trained model that PGD breaks: early stop pays
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import frozen_eval, pgd
from robustlab.runtime import amp_dtype

AMP_NAMES = ("none", "bf16", "fp16")


def build_model(name: str, width: float, num_classes: int = 10) -> tuple[nn.Module, str]:
    """robustlab.models.create(name) when available, else a local CIFAR ResNet18."""
    try:
        from robustlab.models import create
    except ImportError:
        if name != "resnet18":
            raise SystemExit(f"robustlab.models is not importable; only the local resnet18 "
                             f"fallback exists, not {name!r}")
        return _LocalResNet18(num_classes, width), "local resnet18 (robustlab.models missing)"
    return create(name, num_classes=num_classes, width=width), f"robustlab.models {name}"


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(out)) + self.short(x))


class _LocalResNet18(nn.Module):
    """CIFAR-style ResNet18 (3x3 stem, no max-pool), [0,1] input normalised inside."""

    def __init__(self, num_classes: int, width: float) -> None:
        super().__init__()
        w = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]),
                                  nn.ReLU())
        layers, cin = [], w[0]
        for i, c in enumerate(w):
            layers += [_Block(cin, c, 1 if i == 0 else 2), _Block(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.layers(self.stem((x - 0.5) / 0.5))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def prepare(model: nn.Module, args: argparse.Namespace, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Quickly train on the synthetic set and return a test batch (x, y, description)."""
    try:
        import robustlab.data as rd
    except ImportError:
        rd = None
    if args.train_steps <= 0 or rd is None:
        x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed))
        x = x.to(device)
        with torch.no_grad(), frozen_eval(model):
            y = model(x).argmax(1)
        return x, y, "UNTRAINED, random images, labels = its clean predictions"
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    done = 0
    while done < args.train_steps:
        for xb, yb in rd.batches(rd.load("synthetic", "train"), 64, shuffle=True, generator=g,
                                 device=device):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            done += 1
            if done == args.train_steps:
                break
    model.eval()
    x, y = next(iter(rd.batches(rd.load("synthetic", "test"), args.batch, shuffle=False,
                                device=device)))
    return x, y, f"quickly trained ({args.train_steps} Adam steps on 'synthetic'), its test batch"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, amp) -> torch.Tensor:
    """``steps`` forward+backward passes, gradient w.r.t. the input only: what any PGD must pay."""
    ctx = (lambda: torch.autocast(x.device.type, dtype=amp)) if amp else nullcontext
    with frozen_eval(model):
        for _ in range(steps):
            xr = x.detach().requires_grad_(True)
            with ctx():
                loss = F.cross_entropy(model(xr), y)
            (g,) = torch.autograd.grad(loss, xr)
    return g


def robust_acc(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), frozen_eval(model):
        return (model(x_adv).argmax(1) == y).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (1 = full)")
    ap.add_argument("--amp", choices=AMP_NAMES, default="none")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", type=float, default=8 / 255)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-steps", type=int, default=50,
                    help="quick training on the synthetic set first (0: untrained)")
    ap.add_argument("--checkpoint", help="attack this trained robustlab checkpoint instead "
                    "(with --dataset: its first --batch test images)")
    ap.add_argument("--dataset", default=None, help="dataset of --checkpoint (default: recorded)")
    args = ap.parse_args()
    run(args)


def run(args: argparse.Namespace) -> None:
    device, amp = torch.device(args.device), amp_dtype(args.amp)
    torch.manual_seed(args.seed)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.checkpoint:  # a trained model on its own test split
        import robustlab.data as rd
        from robustlab.models import load

        model = load(args.checkpoint).to(device, memory_format=fmt).eval()
        dataset = args.dataset or model.robustlab_meta["meta"]["dataset"]
        test = rd.load(dataset, "test")
        x, y = test.images[:args.batch].float().div(255).to(device), test.labels[:args.batch].to(device)
        origin, how = f"checkpoint {args.checkpoint}", f"the first {args.batch} {dataset} test images"
    else:
        model, origin = build_model(args.model, args.width)
        model = model.to(device, memory_format=fmt).eval()
        x, y, how = prepare(model, args, device)
    x = x.contiguous(memory_format=fmt)
    eps, steps, alpha = args.eps, args.steps, args.eps / 4
    gen = lambda: torch.Generator(device=device).manual_seed(args.seed)  # noqa: E731
    cases: dict[str, Callable[[], object]] = {
        "bound": lambda: bound(model, x, y, steps, amp),
        "robustlab pgd": lambda: pgd(model, x, y, eps=eps, step_size=alpha, steps=steps,
                                     generator=gen(), amp_dtype=amp),
        "robustlab pgd early_stop": lambda: pgd(model, x, y, eps=eps, step_size=alpha,
                                                steps=steps, generator=gen(), amp_dtype=amp,
                                                early_stop=True),
    }
    peer = _torchattacks_case(model, x, y, eps, alpha, steps, amp)
    if peer is not None:
        cases["torchattacks PGD"] = peer
    times: dict[str, list[float]] = {k: [] for k in cases}
    outputs: dict[str, object] = {}
    for name, fn in cases.items():  # warm-up
        outputs[name] = fn()
    for _ in range(args.repeats):  # interleaved repeats
        for name, fn in cases.items():
            t, outputs[name] = timed(fn, device)
            times[name].append(t)
    _report(args, f"{origin}, {how}", device, times, outputs, model, x, y, peer is not None)


def _torchattacks_case(model, x, y, eps, alpha, steps, amp):
    try:
        import torchattacks
    except Exception:  # noqa: BLE001  (optional; any import failure means "not available")
        return None
    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    ctx = (lambda: torch.autocast(x.device.type, dtype=amp)) if amp else nullcontext
    # torchattacks has no autocast option; wrapping the call is what its users do.

    def fn():
        with ctx():
            return atk(x, y)
    return fn


def _report(args, origin, device, times, outputs, model, x, y, has_peer) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    b = med["bound"]
    print(f"model: {origin}, width {args.width}; clean accuracy {robust_acc(model, x, y):.3f}")
    print(f"device {device}, batch {args.batch}x3x32x32, amp {args.amp}, channels_last "
          f"{args.channels_last}, steps {args.steps}, eps {args.eps:.5f}, repeats {args.repeats} "
          f"(after 1 warm-up, interleaved), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'case':28s} {'median s':>10s} {'/ bound':>8s} {'robust acc':>11s}")
    for k in times:
        acc = "" if k == "bound" else f"{robust_acc(model, outputs[k], y):11.3f}"
        print(f"{k:28s} {med[k]:10.4f} {med[k] / b:8.3f} {acc}")
    if not has_peer:
        print("torchattacks: not installed (pip install torchattacks to compare)")
    ratio = med["robustlab pgd early_stop"] / med["robustlab pgd"]
    print(f"early_stop / full loop time: {ratio:.3f}")


if __name__ == "__main__":
    main()
