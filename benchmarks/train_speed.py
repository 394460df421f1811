"""Training speed and accuracy: robustlab's trainer against a plain PyTorch loop, in one run.

The plain loop is what a user would write instead: the same small-cnn architecture written out
as an nn.Sequential, a torch DataLoader over in-memory tensors, the same optimiser, schedule and
batch size, no augmentation. Both train on the same Fashion-MNIST images for the same epochs, and
the script prints seconds per epoch, clean test accuracy and the ratio robustlab / plain.

    python benchmarks/train_speed.py --epochs 2 --subset 20000
    python benchmarks/train_speed.py --model vgg19 --width 0.25     # robustlab only for other models
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

import robustlab as rl
from robustlab.training import TrainConfig, train


def plain_small_cnn(in_ch: int, classes: int, mean: float, std: float) -> nn.Module:
    class Norm(nn.Module):
        def forward(self, x):
            return (x - mean) / std

    return nn.Sequential(
        Norm(), nn.Conv2d(in_ch, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 8 * 8, 200), nn.ReLU(), nn.Linear(200, classes))


def plain_run(train_ds, test_ds, args) -> tuple[float, float]:
    torch.manual_seed(args.seed)
    x = train_ds.images.float() / 255
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, train_ds.labels),
                                         batch_size=args.batch_size, shuffle=True)
    model = plain_small_cnn(train_ds.channels, train_ds.num_classes, train_ds.mean[0], train_ds.std[0])
    opt = (torch.optim.Adam(model.parameters(), lr=args.lr) if args.optimizer == "adam" else
           torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4))
    total = args.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    per_epoch = (time.perf_counter() - t0) / args.epochs
    model.eval()
    with torch.no_grad():
        xt = test_ds.images.float() / 255
        acc = sum((model(xt[i:i + 512]).argmax(1) == test_ds.labels[i:i + 512]).sum().item()
                  for i in range(0, len(xt), 512)) / len(xt)
    return per_epoch, acc


def robustlab_run(test_ds, args) -> tuple[float, float]:
    cfg = TrainConfig(dataset=args.dataset, model=args.model, width=args.width, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, subset=args.subset, val=0,
                      optimizer=args.optimizer, weight_decay=0.0 if args.optimizer == "adam" else 5e-4,
                      channels_last=args.channels_last,
                      augment="none", seed=args.seed)
    with tempfile.TemporaryDirectory() as out:
        final = train(cfg, f"{out}/run", progress=False)
        model = rl.models.load(f"{out}/run/model.safetensors")
    return final["seconds"], rl.evaluation.accuracy(model, test_ds)  # last epoch: past warm-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--subset", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plain", action="store_true", help="skip the plain PyTorch peer")
    p.add_argument("--channels-last", action="store_true",
                   help="robustlab trains in channels_last (the plain loop stays contiguous, as users write it)")
    args = p.parse_args()
    full = rl.data.load(args.dataset, "train")
    train_ds = rl.data.take(full, args.subset, seed=args.seed)
    test_ds = rl.data.load(args.dataset, "test")
    print(f"{args.model} (width {args.width}) on {args.dataset}: {len(train_ds)} images, "
          f"{args.epochs} epochs, batch {args.batch_size}, {args.optimizer} lr {args.lr} cosine, "
          f"{torch.get_num_threads()} threads")
    r_sec, r_acc = robustlab_run(test_ds, args)
    layout = "channels_last" if args.channels_last else "contiguous"
    print(f"robustlab ({layout}): {r_sec:6.1f} s/epoch (last epoch)  clean test acc {100 * r_acc:.2f}%")
    if args.model == "small-cnn" and args.width == 1.0 and not args.no_plain:
        p_sec, p_acc = plain_run(train_ds, test_ds, args)
        print(f"plain (contiguous): {p_sec:6.1f} s/epoch (mean)        clean test acc {100 * p_acc:.2f}%")
        print(f"ratio robustlab/plain time: {r_sec / p_sec:.2f}x ; accuracy difference "
              f"{100 * (r_acc - p_acc):+.2f} points")


if __name__ == "__main__":
    main()
