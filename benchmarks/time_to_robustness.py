"""Wall time to a robust model: every robustlab training method against a plain PGD-AT loop.

The question is not how fast one epoch is but how long it takes to reach a given robustness. In
one run, on the same training images, model and optimiser, this trains with robustlab's
standard, fgsm, fast-fgsm, free, yopo, pgd and trades methods and with a plain PyTorch PGD-AT
loop written out below; after every epoch it records the training wall time so far (scoring
excluded) and the PGD-20 robust accuracy on a fixed set of test images. It then prints

* the wall time each method needs to first reach the target (default: the plain loop's final
  PGD-20 accuracy, less one binomial standard error of it), as a ratio to the plain loop's;
* each final model's AutoAttack accuracy (APGD-CE + APGD-DLR by default), so that a method whose
  models only beat PGD-20 shows;

and writes ``results.json``, ``time_to_robustness.md`` and ``time_to_robustness.png`` (robust
accuracy against wall time, a curve per method) to ``--out``.

    python benchmarks/time_to_robustness.py --threads 1 --out docs/results/time-to-robustness \
        --readme README.md
    python benchmarks/time_to_robustness.py --methods fast-fgsm,pgd --epochs pgd=4 --train-n 2000
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import robustlab as rl
from robustlab.attacks import autoattack, pgd
from robustlab.training import TrainConfig, train

PLAIN = "plain-pgd"  # the loop written in this file
# method -> (method_args, epochs); a pass over the data of Free-AT replays each batch m times,
# so its --epochs count m per pass (Shafahi et al.'s definition)
METHODS: dict[str, tuple[dict, int]] = {
    "standard": ({}, 3), "fgsm": ({}, 6), "fast-fgsm": ({}, 6),
    "free": ({"replays": 2}, 12), "yopo": ({"m": 5, "n": 3}, 6),
    "pgd": ({"steps": 10}, 6), "trades": ({"steps": 10}, 6), PLAIN: ({"steps": 10}, 6)}


def plain_pgd_training(model, x, y, args, epochs: int, on_epoch) -> None:
    """Madry et al.'s PGD-AT as a user would write it: uniform start, ``steps`` signed steps of
    eps/4 (the robustlab default), projection, then an Adam step on the adversarial batch."""
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps, eps = args.method_args[PLAIN]["steps"], args.eps
    gen = torch.Generator().manual_seed(args.seed)
    per_epoch = -(-len(y) // args.batch_size)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(y), generator=gen)
        for k, i in enumerate(range(0, len(y), args.batch_size)):
            if args.schedule == "cosine":  # robustlab's cosine, per optimiser step
                progress = (epoch * per_epoch + k) / (epochs * per_epoch)
                for group in opt.param_groups:
                    group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * progress))
            idx = order[i:i + args.batch_size]
            xb, yb = x[idx], y[idx]
            delta = (torch.rand(xb.shape, generator=gen) * 2 - 1) * eps
            delta = ((xb + delta).clamp(0, 1) - xb).requires_grad_(True)
            model.eval()  # as robustlab's methods attack: batch statistics untouched
            for _ in range(steps):
                loss = F.cross_entropy(model(xb + delta), yb)
                grad, = torch.autograd.grad(loss, delta)
                delta = (delta + eps / 4 * grad.sign()).clamp(-eps, eps)
                delta = ((xb + delta).clamp(0, 1) - xb).detach().requires_grad_(True)
            model.train()
            loss = F.cross_entropy(model(xb + delta.detach()), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        on_epoch(epoch, time.perf_counter() - t0, model)


def pgd20_accuracy(model, probe, eps: float) -> float:
    """PGD-20 (step eps/4, random start, a fixed seed) accuracy on the probe images."""
    x, y = probe
    model.eval()
    gen = torch.Generator().manual_seed(0)
    right = 0
    for i in range(0, len(y), 500):
        x_adv = pgd(model, x[i:i + 500], y[i:i + 500], eps=eps, steps=20, step_size=eps / 4,
                    generator=gen)
        with torch.no_grad():
            right += int((model(x_adv).argmax(1) == y[i:i + 500]).sum())
    return right / len(y)


def autoattack_accuracy(model, probe, eps: float, n: int, attacks: list[str]) -> float:
    x, y = probe[0][:n], probe[1][:n]
    model.eval()
    x_adv = autoattack(model, x, y, eps=eps, version="custom", attacks=attacks)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def run_method(name: str, epochs: int, data, probe, args) -> tuple[list[dict], torch.nn.Module]:
    """Train with ``name``; the curve of (epoch, seconds so far, PGD-20 accuracy) and the model."""
    curve: list[dict] = []

    def record(epoch, seconds, model):
        wall = (curve[-1]["seconds"] if curve else 0.0) + seconds
        curve.append({"epoch": epoch + 1, "seconds": round(wall, 3),
                      "pgd20_acc": pgd20_accuracy(model, probe, args.eps)})
        print(f"  {name:10s} epoch {epoch + 1:2d}: {wall:7.1f} s, PGD-20 "
              f"{100 * curve[-1]['pgd20_acc']:.1f}%", flush=True)

    method_args = dict(args.method_args[name])
    torch.manual_seed(args.seed)
    if name == PLAIN:
        model = rl.models.create(args.model, num_classes=data.num_classes,
                                 in_channels=data.channels, width=args.width, mean=data.mean,
                                 std=data.std)
        x, y = data.images.float() / 255, data.labels
        plain_pgd_training(model, x, y, args, epochs, record)
        return curve, model
    if name != "standard":
        method_args.setdefault("eps", args.eps)
    if name == "yopo":  # the paper's inner step, 2/255 at eps 8/255
        method_args.setdefault("step_size", args.eps / 4)
    cfg = TrainConfig(dataset=args.dataset, model=args.model, width=args.width, epochs=epochs,
                      batch_size=args.batch_size, lr=args.lr, optimizer="adam",
                      weight_decay=0.0, schedule=args.schedule, val=0, augment="none",
                      method=name, method_args=method_args, seed=args.seed)

    def hook(run, epoch, metrics):
        record(epoch, metrics["seconds"], run.model)
        run.model.train()

    with tempfile.TemporaryDirectory() as out:
        train(cfg, f"{out}/run", progress=False, hooks=[hook], data=data)
        model = rl.models.load(f"{out}/run/model.safetensors")
    return curve, model


def first_reach(curve: list[dict], target: float) -> float | None:
    return next((c["seconds"] for c in curve if c["pgd20_acc"] >= target), None)


def summarise(curves: dict, aa: dict, args) -> dict:
    """Each method's time to the target as a ratio to the plain loop's, and whether AutoAttack
    confirms it: the final model's AutoAttack accuracy at least the plain loop's less one
    standard error."""
    final = curves[PLAIN][-1]["pgd20_acc"]
    noise = _standard_error(final, args.eval_n)
    target = args.target if args.target is not None else final - noise
    base = first_reach(curves[PLAIN], target)
    aa_floor = aa[PLAIN] - _standard_error(aa[PLAIN], args.aa_n) if PLAIN in aa else None
    rows = []
    for name, curve in curves.items():
        t = first_reach(curve, target)
        rows.append({"method": name, "epochs": len(curve), "seconds": curve[-1]["seconds"],
                     "final_pgd20_acc": curve[-1]["pgd20_acc"], "seconds_to_target": t,
                     "ratio_to_plain": None if t is None or not base else t / base,
                     "autoattack_acc": aa.get(name),
                     "autoattack_confirms": None if aa_floor is None or name not in aa else
                     aa[name] >= aa_floor})
    return {"target": target, "plain_final_pgd20_acc": final, "noise": noise,
            "autoattack_floor": aa_floor, "rows": rows}


def _standard_error(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / max(n, 1))


def table(summary: dict, args) -> str:
    floor = summary["autoattack_floor"]
    lines = [f"Target: PGD-20 accuracy {100 * summary['target']:.1f}% (the plain loop's final "
             f"{100 * summary['plain_final_pgd20_acc']:.1f}% less one standard error, "
             f"{100 * summary['noise']:.1f} points, of {args.eval_n} images). AutoAttack "
             f"({args.aa_attacks} on {args.aa_n} images) confirms a model at "
             + ("-" if floor is None else f"{100 * floor:.1f}%") + " or more (the plain loop's "
             "AutoAttack accuracy less one standard error).", "",
             "| method | epochs | train s | final PGD-20 | s to target | ratio to plain | "
             "AutoAttack | AutoAttack confirms |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        reach = "not reached" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.0f}"
        ratio = "-" if r["ratio_to_plain"] is None else f"{r['ratio_to_plain']:.2f}x"
        aa = "-" if r["autoattack_acc"] is None else f"{100 * r['autoattack_acc']:.1f}%"
        ok = {None: "-", True: "yes", False: "no"}[r["autoattack_confirms"]]
        lines.append(f"| {r['method']} | {r['epochs']} | {r['seconds']:.0f} | "
                     f"{100 * r['final_pgd20_acc']:.1f}% | {reach} | {ratio} | {aa} | {ok} |")
    return "\n".join(lines) + "\n"


def figure(curves: dict, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.plot([0] + [c["seconds"] for c in curve], [None] + [100 * c["pgd20_acc"]
                for c in curve], marker="o", ms=3, label=name, lw=2.5 if name == PLAIN else 1.5)
    ax.axhline(100 * summary["target"], color="grey", ls="--", lw=1, label="target")
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("PGD-20 robust accuracy (%)")
    ax.set_title("Time to robustness")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--train-n", type=int, default=5000, help="training images (a seeded subset)")
    p.add_argument("--eval-n", type=int, default=1000, help="fixed test images for PGD-20")
    p.add_argument("--aa-n", type=int, default=500, help="test images for AutoAttack (0: none)")
    p.add_argument("--aa-attacks", default="apgd-ce,apgd-dlr", help="AutoAttack's attacks "
                   "(pyautoattack names; apgd-ce,apgd-t,fab-t,square is its standard set)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--epochs", action="append", default=[], metavar="METHOD=N",
                   help="epochs of one method (repeatable)")
    p.add_argument("--schedule", choices=["constant", "cosine"], default="cosine",
                   help="the learning rate of every method and of the plain loop (cosine: "
                        "robustlab's default, decayed per optimiser step)")
    p.add_argument("--method-arg", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method's setting, e.g. free.replays=2 (repeatable; JSON values)")
    p.add_argument("--target", type=float, default=None, help="PGD-20 accuracy to reach")
    p.add_argument("--out", default="time-to-robustness", help="folder for the results")
    p.add_argument("--readme", metavar="FILE", help="also put the table and figure between "
                   f"the {MARK_START!r} and {MARK_END!r} lines of FILE (e.g. README.md)")
    return p.parse_args(argv)


MARK_START, MARK_END = "<!-- time-to-robustness:start -->", "<!-- time-to-robustness:end -->"


def publish(readme: Path, out: Path, body: str, command: str) -> None:
    """Replace the generated block of ``readme`` with ``body``, the figure and the command."""
    text = readme.read_text()
    if MARK_START not in text or MARK_END not in text:
        raise SystemExit(f"{readme} has no {MARK_START} ... {MARK_END} block to fill")
    figure_path = Path(os.path.relpath(out / "time_to_robustness.png", readme.parent))
    block = (f"{MARK_START}\n<!-- generated by: {command} -->\n\n{body}\n"
             f"![robust accuracy against wall time]({figure_path.as_posix()})\n{MARK_END}")
    head, rest = text.split(MARK_START, 1)
    readme.write_text(head + block + rest.split(MARK_END, 1)[1])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or PLAIN not in names:
        raise SystemExit(f"--methods: unknown {unknown}; the plain loop {PLAIN!r} is required")
    epochs = {m: METHODS[m][1] for m in names}
    for item in args.epochs:
        m, _, n = item.partition("=")
        epochs[m] = int(n)
    args.method_args = {m: dict(METHODS[m][0]) for m in METHODS}
    for item in args.method_arg:
        key, _, value = item.partition("=")
        m, _, k = key.partition(".")
        args.method_args[m][k] = json.loads(value)
    data = rl.data.take(rl.data.load(args.dataset, "train"), args.train_n, seed=args.seed)
    test = rl.data.take(rl.data.load(args.dataset, "test"), args.eval_n, seed=args.seed)
    probe = (test.images.float() / 255, test.labels)
    print(f"{args.model} (width {args.width}) on {len(data)} {args.dataset} images, eps "
          f"{args.eps:.3g}, batch {args.batch_size}, Adam {args.lr} {args.schedule}; PGD-20 on "
          f"{len(test)} test "
          f"images; {torch.get_num_threads()} threads", flush=True)
    curves, models = {}, {}
    for name in [PLAIN] + [m for m in names if m != PLAIN]:
        curves[name], models[name] = run_method(name, epochs[name], data, probe, args)
    aa = {}
    if args.aa_n:
        for name, model in models.items():
            aa[name] = autoattack_accuracy(model, probe, args.eps, args.aa_n,
                                           args.aa_attacks.split(","))
            print(f"  AutoAttack {name:10s}: {100 * aa[name]:.1f}%", flush=True)
    summary = summarise(curves, aa, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"settings": vars(args), "epochs": epochs, "curves": curves, **summary}
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "time_to_robustness.md").write_text(table(summary, args))
    figure(curves, summary, out / "time_to_robustness.png")
    print(table(summary, args))
    if args.readme:
        command = "python benchmarks/time_to_robustness.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        publish(Path(args.readme), out, table(summary, args), command)
    confirmed = [r for r in summary["rows"] if r["method"] != PLAIN and r["ratio_to_plain"]
                 and r["autoattack_confirms"] is not False]
    best = min(confirmed, key=lambda r: r["ratio_to_plain"], default=None)
    if best is None:
        print("no method reached the target with AutoAttack's confirmation -> FAIL")
    else:
        print(f"fastest to the target (AutoAttack confirming): {best['method']} at "
              f"{best['ratio_to_plain']:.2f}x the plain loop's wall time (goal: <= 0.2x) -> "
              f"{'PASS' if best['ratio_to_plain'] <= 0.2 else 'FAIL'}")
    return doc


if __name__ == "__main__":
    main()
