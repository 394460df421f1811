#!/usr/bin/env bash
# Issue 3 measurements (run scripts/measure/issue2.sh first: it trains the models used here).
# 1. small-cnn on Fashion-MNIST: clean, FGSM, PGD-20 and AutoAttack accuracy at eps 0.1 (1000 test images).
# 2. The SSR report's Table 1 on Fashion-MNIST: feature-distortion examples crafted on VGG16/VGG19
#    (width 0.25) blocks 1 and 2 at eps 8/255, 16/255 and 0.1, scored on VGG16, VGG19 and ResNet18.
# 3. The attack-speed benchmark (PGD-10 against its bound, early stop, torchattacks if installed).
#   bash scripts/measure/issue3.sh          # about 15 minutes on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/../.."
RL=.venv/bin/robustlab
M=${M:-runs/issue2}
OUT=${OUT:-runs/issue3}
N=${N:-1000}
mkdir -p "$OUT"
$RL evaluate --model "$M/small-cnn/model.safetensors" --split test --n "$N" --eps 0.1 \
  --attack fgsm --attack pgd --steps 20 --sanity --check-large-eps 0.5 --no-progress \
  --out "$OUT/small-cnn-attacks.json"
$RL evaluate --model "$M/small-cnn/model.safetensors" --split test --n "$N" --eps 0.1 \
  --attack autoattack --no-progress --out "$OUT/small-cnn-autoattack.json"

advs=()
for ex in vgg16 vgg19; do
  for b in 1 2; do
    for eps in 0.031373 0.062745 0.1; do
      d="$OUT/fd/$ex-b$b-eps$eps"
      $RL evaluate --model "$M/$ex/model.safetensors" --split test --n "$N" \
        --attack feature-distortion --extractor "$M/$ex/model.safetensors" --extractor-blocks $b \
        --eps $eps --steps 20 --no-progress --save-adv "$d" --out "$d/eval.json" > /dev/null
      advs+=(--adv "$ex-b$b-eps$eps=$d/adv0.safetensors")
    done
  done
done
$RL score "${advs[@]}" --model "vgg16=$M/vgg16/model.safetensors" \
  --model "vgg19=$M/vgg19/model.safetensors" --model "resnet18=$M/resnet18/model.safetensors" \
  --out "$OUT/table1"
.venv/bin/python benchmarks/attack_speed.py --repeats 5
# early stop on a model PGD mostly breaks (the small-cnn above, eps 0.1, PGD-20)
.venv/bin/python benchmarks/attack_speed.py --checkpoint "$M/small-cnn/model.safetensors" \
  --batch 256 --eps 0.1 --steps 20 --repeats 3
