#!/usr/bin/env bash
# The main job: set up (idempotent), then a quick CPU reproduction on Fashion-MNIST: train a
# small CNN and evaluate it clean and under FGSM and PGD-20. Results land in runs/quick/.
# Safe to run twice (each run replaces runs/quick). OUT=dir changes the output directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RL=.venv/bin/robustlab
OUT=${OUT:-runs/quick}

$RL train --dataset fashion-mnist --model small-cnn --epochs 2 --subset 20000 --seed 0 \
  --optimizer adam --lr 0.001 --weight-decay 0 --augment none --channels-last \
  --out "$OUT/small-cnn" --overwrite
$RL evaluate --model "$OUT/small-cnn/model.safetensors" --dataset fashion-mnist --split test \
  --n 1000 --attack fgsm --attack pgd --eps 0.1 --steps 20 --sanity --seed 0 \
  --out "$OUT/small-cnn/eval.json"
echo "quickstart: results in $OUT/small-cnn/ (metrics.jsonl, model.safetensors, eval.json)"
