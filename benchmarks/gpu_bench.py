"""The prepared GPU benchmark (issue 14): every figure a ratio measured in this same run.

(a) PGD-10 on robustlab's full-width CIFAR ResNet18 at batch 512: fp32, bf16, bf16 +
    channels_last, and + torch.compile, each against its forward+backward bound (11 passes of the
    same model and batch, gradients for the input only) and against torchattacks' PGD in fp32.
(b) One epoch of PGD-10-AT, Fast-FGSM-AT and TRADES-10 on PreAct ResNet18 through the robustlab
    trainer, on 50,000 synthetic uint8 CIFAR-sized images made in memory (GPU-resident), in
    images/s and against plain forward+backward training of the same model and batch (bounds of
    11, 2 and 11 passes per image; TRADES' KL term adds a twelfth forward).
(c) Images/s of B3 and NRP purifier training at the paper's size (32x32, batch 16, 20
    feature-distortion steps of VGG19's first two blocks, NRP with 23 RRDB blocks).
(d) Images/s of white-box PGD-20 through Purified(unet-b, resnet18).
(e) Peak GPU memory of each (torch.cuda.max_memory_allocated, reset between; CUDA only).
Then the issue's goals as PASS/FAIL lines. ``--smoke-paper`` also runs one epoch of the
ssr-purifier paper preset on synthetic CIFAR-shaped data (on a CPU with --tiny: its plan only).

    bash benchmarks/gpu.sh --out gpu.json                     # one GPU, under 8 minutes
    bash benchmarks/gpu.sh --device cpu --tiny --out f.json   # every section at toy size
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from attack_speed import _torchattacks_case, bound, timed  # benchmarks/ is on the path

import robustlab as rl
from robustlab.attacks import frozen_eval, pgd
from robustlab.purifiers import Purified, create_purifier
from robustlab.runtime import amp_dtype, channels_last
from robustlab.training import TrainConfig, train

EPS, STEP = 8 / 255, 2 / 255
GOALS = {"pgd10_vs_torchattacks": 2.5, "fast_fgsm_epoch_s": 5.0, "pgd10_at_vs_bound": 1.15}


@dataclass(frozen=True)
class Sizes:
    """How big each section is: the issue's (full) or toy ones for a CPU (--tiny)."""

    pgd_batch: int = 512
    width: float = 1.0
    repeats: int = 5
    pgd_steps: int = 10
    train_n: int = 50_000
    train_batch: int = 512
    train_steps: int = 10
    pur_batch: int = 16
    pur_images: int = 800
    pur_fd_steps: int = 20
    nrp_blocks: int = 23
    purified_batch: int = 256
    purified_steps: int = 20


TINY = Sizes(pgd_batch=8, width=0.125, repeats=1, pgd_steps=1, train_n=32, train_batch=8,
             train_steps=1, pur_batch=8, pur_images=16, pur_fd_steps=1, nrp_blocks=1,
             purified_batch=8, purified_steps=1)


class Report:
    """The figures (name -> number), notes, and what was printed."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.figures, self.notes = device, {}, []

    def add(self, name: str, value: float, text: str = "") -> None:
        self.figures[name] = float(value)
        if text:
            print(f"  {text}")

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}")


@contextmanager
def peak_memory(report: Report, name: str):
    """Record ``name``.peak_mib: the peak GPU memory allocated inside the block (CUDA only)."""
    cuda = report.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(report.device)
        torch.cuda.reset_peak_memory_stats(report.device)
    yield
    if cuda:
        mib = torch.cuda.max_memory_allocated(report.device) / 2**20
        report.add(f"{name}.peak_mib", mib, f"{name}: peak GPU memory {mib:,.0f} MiB")


def median_seconds(fns: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Median wall time of each function after one warm-up call each, repeats interleaved (so a
    drifting load hits every case alike)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn, device)[0])
    return {k: statistics.median(v) for k, v in times.items()}


# ------------------------------------------------------------------------ (a) PGD-10
def pgd_configs(tiny: bool) -> dict[str, dict]:
    # on a CPU at toy size the compiled case uses dynamo's eager backend: the same code path
    # without minutes of C++ kernel builds
    backend = "eager" if tiny else "inductor"
    return {"fp32": {}, "bf16": {"amp": "bf16"}, "bf16_cl": {"amp": "bf16", "cl": True},
            "bf16_cl_compile": {"amp": "bf16", "cl": True, "compile": backend}}


def section_pgd(sz: Sizes, report: Report, tiny: bool) -> None:
    dev = report.device
    print(f"(a) PGD-{sz.pgd_steps} on resnet18 (width {sz.width}), batch {sz.pgd_batch}, 3x32x32")
    torch.manual_seed(0)
    base = rl.models.create("resnet18", num_classes=10, width=sz.width).to(dev).eval()
    x = torch.rand(sz.pgd_batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(dev)
    y = torch.randint(0, 10, (sz.pgd_batch,), generator=torch.Generator().manual_seed(1)).to(dev)
    for name, c in pgd_configs(tiny).items():
        model = channels_last(base, c.get("cl", False))  # in place: later cases reuse it
        xc = channels_last(x, c.get("cl", False))
        net = torch.compile(model, backend=c["compile"]) if c.get("compile") else model
        amp = amp_dtype(c.get("amp"))
        gen = lambda: torch.Generator(device=dev).manual_seed(0)  # noqa: E731
        with peak_memory(report, f"pgd10.{name}"):
            med = median_seconds({
                "pgd": lambda: pgd(net, xc, y, eps=EPS, step_size=STEP, steps=sz.pgd_steps,
                                   generator=gen(), amp_dtype=amp),
                "bound": lambda: bound(net, xc, y, sz.pgd_steps + 1, amp)}, dev, sz.repeats)
        report.add(f"pgd10.{name}.seconds", med["pgd"])
        report.add(f"pgd10.{name}.vs_bound", med["pgd"] / med["bound"],
                   f"{name:16s} {med['pgd']:.4f} s  = {med['pgd'] / med['bound']:.3f}x its "
                   f"bound of {sz.pgd_steps + 1} forward+backward passes")
    base = base.to(memory_format=torch.contiguous_format)
    _versus_torchattacks(base, x, y, sz, report)


def _versus_torchattacks(model, x, y, sz: Sizes, report: Report) -> None:
    peer = _torchattacks_case(model, x, y, EPS, STEP, sz.pgd_steps, None)
    if peer is None:
        report.note("torchattacks is not installed (pip install torchattacks): no peer column")
        return
    t = median_seconds({"torchattacks": peer}, report.device, sz.repeats)["torchattacks"]
    report.add("pgd10.torchattacks_fp32.seconds", t, f"torchattacks PGD fp32 {t:.4f} s")
    for name in pgd_configs(False):
        ratio = t / report.figures[f"pgd10.{name}.seconds"]
        report.add(f"pgd10.{name}.speedup_vs_torchattacks", ratio,
                   f"{name:16s} {ratio:.2f}x faster than torchattacks fp32")


# ------------------------------------------------------------------------ (b) adversarial training
METHODS = {"pgd-at": ("pgd", {"eps": EPS, "step_size": STEP}, 11),
           "fast-fgsm-at": ("fast-fgsm", {"eps": EPS}, 2),
           "trades": ("trades", {"eps": EPS, "step_size": STEP, "beta": 6.0}, 11)}


def cifar_sized(n: int) -> rl.data.ImageDataset:
    """``n`` synthetic uint8 CIFAR-10-sized images (random pixels, 10 balanced labels)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return rl.data.ImageDataset(images, torch.arange(n) % 10, name="cifar10", num_classes=10,
                                class_names=[str(i) for i in range(10)], mean=(0.49, 0.48, 0.45),
                                std=(0.25, 0.24, 0.26), flip_ok=True, default_augment="cifar")


def plain_epoch_seconds(ds, sz: Sizes, args, device) -> float:
    """One epoch of plain forward+backward+SGD training of PreAct ResNet18 on GPU-resident data,
    the same batch, precision and memory format (no augmentation, no robustlab)."""
    torch.manual_seed(0)
    model = channels_last(rl.models.create("preact-resnet18", width=sz.width).to(device),
                          args.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images, labels = ds.images.to(device), ds.labels.to(device)

    def epoch(limit: int | None = None):
        order = torch.randperm(len(labels), device=device)
        for i in range(0, len(labels) if limit is None else limit, sz.train_batch):
            idx = order[i:i + sz.train_batch]
            x = channels_last(images[idx].float().div_(255), args.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype(args.amp), enabled=args.amp != "none"):
                loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    epoch(limit=2 * sz.train_batch)  # warm-up
    return timed(epoch, device)[0]


def section_training(sz: Sizes, report: Report, args) -> None:
    dev = report.device
    print(f"(b) one epoch of adversarial training, preact-resnet18 (width {sz.width}), "
          f"{sz.train_n} images, batch {sz.train_batch}, amp {args.amp}, channels_last "
          f"{args.channels_last}")
    ds = cifar_sized(sz.train_n)
    with peak_memory(report, "train.plain"):
        plain = plain_epoch_seconds(ds, sz, args, dev)
    report.add("train.plain.images_per_s", sz.train_n / plain,
               f"plain forward+backward  {plain:.2f} s/epoch  {sz.train_n / plain:,.0f} images/s")
    for name, (method, margs, passes) in METHODS.items():
        if method != "fast-fgsm":
            margs = {**margs, "steps": sz.train_steps}
            passes = sz.train_steps + 1
        cfg = TrainConfig(
            dataset="cifar10", model="preact-resnet18", width=sz.width, epochs=2,
            batch_size=sz.train_batch, optimizer="sgd", lr=0.1, weight_decay=5e-4, val=0,
            method=method, method_args=margs, amp=args.amp, channels_last=args.channels_last,
            compile=args.compile_train, guards={"overfit_check": False, "robust_val": False})
        with tempfile.TemporaryDirectory() as out, peak_memory(report, f"train.{name}"):
            final = train(cfg, Path(out) / "run", data=ds, device=dev, progress=False)
        s = final["seconds"]  # the second epoch: past warm-up (and compilation)
        report.add(f"train.{name}.epoch_s", s)
        report.add(f"train.{name}.images_per_s", sz.train_n / s)
        report.add(f"train.{name}.vs_bound", s / (passes * plain),
                   f"{name:13s} {s:.2f} s/epoch  {sz.train_n / s:,.0f} images/s  = "
                   f"{s / (passes * plain):.3f}x {passes} plain passes per image")


# ------------------------------------------------------------------------ (c), (d) purifiers
def section_purifiers(sz: Sizes, report: Report, args) -> None:
    dev = report.device
    print(f"(c) purifier training at 32x32, batch {sz.pur_batch}, {sz.pur_fd_steps} "
          f"feature-distortion steps, {sz.pur_images} images per epoch, amp {args.amp}")
    from robustlab.training.purifier.config import PurifierConfig
    from robustlab.training.purifier.trainer import train_purifier

    ds = cifar_sized(sz.pur_images)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        vgg = rl.models.create("vgg19", num_classes=10, width=sz.width)
        rl.models.save(vgg, Path(tmp) / "vgg19.safetensors", dataset="cifar10")
        for name, extra in (("b3", {"preset": "B3"}),
                            ("nrp", {"arch": "nrp", "arch_kwargs": {"n_blocks": sz.nrp_blocks}})):
            cfg = PurifierConfig(dataset="cifar10", extractor=str(Path(tmp) / "vgg19.safetensors"),
                                 width=sz.width, epochs=2, batch_size=sz.pur_batch, subset=None,
                                 steps=sz.pur_fd_steps, val_n=0, grid_n=2, amp=args.amp,
                                 channels_last=args.channels_last, **extra)
            with peak_memory(report, f"purifier.{name}"):
                final = train_purifier(cfg, Path(tmp) / name, data=ds, device=dev,
                                       progress=False)
            ips = final["images_per_second"]  # of the second epoch
            report.add(f"purifier.{name}.images_per_s", ips,
                       f"{name:4s} training {ips:,.1f} images/s")


def section_purified_pgd(sz: Sizes, report: Report, args) -> None:
    dev = report.device
    print(f"(d) white-box PGD-{sz.purified_steps} through Purified(unet-b, resnet18), batch "
          f"{sz.purified_batch}, amp {args.amp}, channels_last {args.channels_last}")
    torch.manual_seed(0)
    model = Purified(create_purifier("unet-b", 3, width=sz.width),
                     rl.models.create("resnet18", num_classes=10, width=sz.width))
    model = channels_last(model.to(dev).eval(), args.channels_last)
    x = channels_last(torch.rand(sz.purified_batch, 3, 32, 32).to(dev), args.channels_last)
    with torch.no_grad(), frozen_eval(model):
        y = model(x).argmax(1)
    run = lambda: pgd(model, x, y, eps=EPS, step_size=STEP, steps=sz.purified_steps,  # noqa: E731
                      amp_dtype=amp_dtype(args.amp), generator=torch.Generator(dev).manual_seed(0))
    with peak_memory(report, "purified_pgd20"):
        s = median_seconds({"pgd": run}, dev, sz.repeats)["pgd"]
    report.add("purified_pgd20.images_per_s", sz.purified_batch / s,
               f"PGD-{sz.purified_steps} through the purified model: "
               f"{sz.purified_batch / s:,.1f} images/s")


# ------------------------------------------------------------------------ goals, smoke, main
def goals(report: Report, tiny: bool) -> None:
    print("goals (one H200-class GPU):")
    f = report.figures
    rows = [("PGD-10 bf16+channels_last at least 2.5x torchattacks' fp32 speed",
             f.get("pgd10.bf16_cl.speedup_vs_torchattacks"), lambda v: v >= 2.5, "{:.2f}x"),
            ("a Fast-FGSM-AT epoch of 50,000 images under 5 s",
             f.get("train.fast-fgsm-at.epoch_s"), lambda v: v < 5.0, "{:.2f} s"),
            ("PGD-10-AT within 1.15x of eleven forward+backward passes per image",
             f.get("train.pgd-at.vs_bound"), lambda v: v <= 1.15, "{:.3f}x")]
    for text, value, ok, fmt in rows:
        if value is None:
            verdict, shown = "SKIP (not measured: see the notes)", "-"
        else:
            verdict = "not judged (--tiny sizes)" if tiny else ("PASS" if ok(value) else "FAIL")
            shown = fmt.format(value)
        print(f"  GOAL {text}: {shown} -> {verdict}")


def smoke_paper(args) -> None:
    """One epoch of every training step of the ssr-purifier paper preset on the synthetic
    CIFAR-shaped set (500 train / 200 test images); on a CPU with --tiny only its plan."""
    print("smoke: robustlab reproduce ssr-purifier --preset paper, one epoch, synthetic data")
    sets = ["dataset=synthetic", "cls_epochs=1", "at_epochs=1", "pur_epochs=1",
            "imagenet_vgg16_epochs=0", "imagenet_vgg16_pretrained=false"]
    dry = args.tiny and torch.device(args.device).type != "cuda"
    out = args.smoke_dir or (str(Path(tempfile.gettempdir()) / "robustlab-smoke-paper-plan")
                             if dry else tempfile.mkdtemp(prefix="robustlab-smoke-paper-"))
    cmd = [sys.executable, "-m", "robustlab.cli", "reproduce", "ssr-purifier", "--preset", "paper",
           "--out", out, "--device", str(args.device), "--no-progress",
           *[a for s in sets for a in ("--set", s)]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd + (["--dry-run"] if dry else []), capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    print("\n".join(f"  {line}" for line in (lines[-3:] if dry else lines[-15:])))
    print(f"  {'plan printed' if dry else 'ran'} in {time.perf_counter() - t0:.1f} s, exit "
          f"{proc.returncode}; command: {' '.join(cmd[2:])}")
    if proc.returncode != 0:
        raise SystemExit(f"the paper-preset smoke failed (exit {proc.returncode})")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="toy sizes: every section in seconds")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="bf16",
                   help="autocast of sections (b)-(d) (section (a) measures each)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile-train", action="store_true", help="torch.compile the trained model")
    p.add_argument("--out", help="write every figure here as JSON")
    p.add_argument("--smoke-paper", action="store_true", help="also the paper-preset smoke")
    p.add_argument("--smoke-dir", help="where the smoke's run goes (default: a temporary folder)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    sz = TINY if args.tiny else Sizes()
    report = Report(device)
    t0 = time.perf_counter()
    print(f"robustlab {rl.__version__}, torch {torch.__version__}, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"{'tiny sizes' if args.tiny else 'full sizes'}")
    for section in (lambda: section_pgd(sz, report, args.tiny),
                    lambda: section_training(sz, report, args),
                    lambda: section_purifiers(sz, report, args),
                    lambda: section_purified_pgd(sz, report, args)):
        section()
    if device.type != "cuda":
        report.note("(e) peak GPU memory is measured on CUDA only")
    goals(report, args.tiny)
    if args.smoke_paper:
        smoke_paper(args)
    total = time.perf_counter() - t0
    print(f"total {total:.1f} s")
    doc = {"device": str(device), "tiny": args.tiny, "sizes": asdict(sz), "seconds": total,
           "options": {"amp": args.amp, "channels_last": args.channels_last,
                       "compile_train": args.compile_train},
           "figures": report.figures, "notes": report.notes, "goals": GOALS}
    bad = sorted(k for k, v in report.figures.items() if not math.isfinite(v))
    if bad:
        raise SystemExit(f"non-finite figures: {', '.join(bad)}")
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    main()
