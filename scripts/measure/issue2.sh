#!/usr/bin/env bash
# Issue 2 measurements: clean test accuracy and seconds per epoch of small-cnn, vgg19 (width 0.25)
# and resnet18 (width 0.25) on Fashion-MNIST, 2 epochs on 20000 training images, plus the
# robustlab-vs-plain-PyTorch training benchmark. Run it on an otherwise idle machine.
# Settings: Adam 1e-3, cosine, batch 128, channels_last, the dataset's default augmentation (pad-2
# random crop), as the README's table was measured; the plain-loop benchmark uses none on both sides.
#   bash scripts/measure/issue2.sh          # about 10 minutes on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/../.."
RL=.venv/bin/robustlab
OUT=${OUT:-runs/issue2}
COMMON=(--dataset fashion-mnist --epochs 2 --subset 20000 --seed 0 --no-progress --overwrite
        --optimizer adam --lr 0.001 --weight-decay 0 --channels-last)
$RL train "${COMMON[@]}" --model small-cnn --out "$OUT/small-cnn"
$RL train "${COMMON[@]}" --model vgg19 --width 0.25 --out "$OUT/vgg19"
$RL train "${COMMON[@]}" --model resnet18 --width 0.25 --out "$OUT/resnet18"
$RL train "${COMMON[@]}" --model vgg16 --width 0.25 --out "$OUT/vgg16"   # for issue 3's Table 1
.venv/bin/python - "$OUT" <<'PY'
import json, sys
import robustlab as rl
out = sys.argv[1]
test = rl.data.load("fashion-mnist", "test")
print("| model | width | clean test acc (%) | s/epoch (epoch 1, epoch 2) |")
print("|---|---|---|---|")
for m in ("small-cnn", "vgg19", "resnet18", "vgg16"):
    model = rl.models.load(f"{out}/{m}/model.safetensors")
    acc = rl.evaluation.accuracy(model, test)
    secs = [json.loads(line)["seconds"] for line in open(f"{out}/{m}/metrics.jsonl")]
    print(f"| {m} | {model.robustlab_spec['kwargs']['width']:g} | {100 * acc:.2f} | "
          f"{', '.join(f'{s:.1f}' for s in secs)} |")
PY
.venv/bin/python benchmarks/train_speed.py --epochs 2 --subset 20000 --optimizer adam --lr 0.001 --channels-last
