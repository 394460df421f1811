#!/usr/bin/env bash
# Issue 2 measurements: clean test accuracy and seconds per epoch of small-cnn, vgg19 (width 0.25)
# and resnet18 (width 0.25) on Fashion-MNIST, 2 epochs on 20000 training images, plus the
# robustlab-vs-plain-PyTorch training benchmark. Run it on an otherwise idle machine.
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
echo "| model | width | clean test acc (%) | s/epoch (epoch 1, epoch 2) |"
echo "|---|---|---|---|"
for m in small-cnn vgg19 resnet18 vgg16; do
  acc=$($RL evaluate --model "$OUT/$m/model.safetensors" --split test --no-progress | .venv/bin/python -c 'import json,sys; print(f"{100*json.load(sys.stdin)[\"clean_acc\"]:.2f}")')
  secs=$(.venv/bin/python -c "import json; print(', '.join(str(json.loads(l)['seconds']) for l in open('$OUT/$m/metrics.jsonl')))")
  width=$([ $m = small-cnn ] && echo 1 || echo 0.25)
  echo "| $m | $width | $acc | $secs |"
done
.venv/bin/python benchmarks/train_speed.py --epochs 2 --subset 20000 --optimizer adam --lr 0.001 --channels-last
