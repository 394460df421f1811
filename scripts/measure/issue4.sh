#!/usr/bin/env bash
# Issue 4 measurements: adversarial training on Fashion-MNIST with small-cnn, 20000 training
# images, 2 epochs, eps 0.1 (PGD: step eps/4, 7 steps), Adam 1e-3 cosine, batch 128, no
# augmentation (the settings of benchmarks/train_speed.py's plain PyTorch loop), channels_last
# (about 20% faster convolutions on this AVX2 CPU; every method uses it). Trains standard,
# fgsm, fast-fgsm, pgd, trades (beta 6) and transfer-adv (source: a standard vgg19 at width 0.25,
# trained first), then FGSM-AT at eps 0.2 for 5 epochs with the catastrophic-overfitting guard in
# warn mode (marks, does not stop) to see whether it overfits; evaluates every model clean and
# under PGD-20 at eps 0.1 on the first 1000 test images; draws the stress figures; and prints a
# Markdown table: clean / PGD-20 / seconds per epoch / cost ratio vs standard.
#
#   bash scripts/measure/issue4.sh            # full size; run on an otherwise idle machine
#   SMOKE=1 bash scripts/measure/issue4.sh    # tiny version (minutes): checks the script works
#
# "s/epoch" is the training loop only (metrics.jsonl "seconds", mean over epochs); the guards'
# PGD checks after each epoch are reported apart ("guard s/epoch"). Safe to re-run (--overwrite).
set -euo pipefail
cd "$(dirname "$0")/../.."
RL=.venv/bin/robustlab
PY=.venv/bin/python
OUT=${OUT:-runs/issue4}
if [ "${SMOKE:-0}" = 1 ]; then
  OUT=$OUT-smoke SUBSET=300 EPOCHS=1 CO_EPOCHS=2 N=64 N_STRESS=32
  GUARDS=(--set guards.overfit_n=64 --set guards.robust_val_n=64 --set guards.steps=2)
  STRESS_STEPS=1,2,5
else
  SUBSET=20000 EPOCHS=2 CO_EPOCHS=5 N=1000 N_STRESS=500
  GUARDS=()
  STRESS_STEPS=1,2,5,10,20
fi
EPS=0.1 STEP=0.025
COMMON=(--dataset fashion-mnist --subset "$SUBSET" --seed 0 --no-progress --overwrite
        --optimizer adam --lr 0.001 --weight-decay 0 --batch-size 128 --augment none --channels-last
        "${GUARDS[@]}")
METHODS=(standard fgsm fast-fgsm pgd trades transfer-adv)

echo "== transfer source: standard vgg19, width 0.25"
$RL train "${COMMON[@]}" --epochs "$EPOCHS" --model vgg19 --width 0.25 --out "$OUT/source-vgg19"

train() {  # train NAME [flags...]
  local name=$1
  shift
  echo "== $name"
  $RL train "${COMMON[@]}" --epochs "$EPOCHS" --model small-cnn --out "$OUT/$name" "$@"
}
train standard --method standard
train fgsm --method fgsm --eps $EPS
train fast-fgsm --method fast-fgsm --eps $EPS
train pgd --method pgd --eps $EPS --steps 7 --step-size $STEP
train trades --method trades --eps $EPS --steps 7 --step-size $STEP --beta 6
train transfer-adv --method transfer-adv --source "$OUT/source-vgg19/model.safetensors" \
  --eps $EPS --steps 7 --step-size $STEP --mix 0.5

echo "== fgsm at eps 0.2, $CO_EPOCHS epochs, catastrophic-overfitting guard in warn mode"
$RL train "${COMMON[@]}" --epochs "$CO_EPOCHS" --model small-cnn --method fgsm --eps 0.2 \
  --set guards.overfit_action=warn --out "$OUT/fgsm-eps0.2"

for m in "${METHODS[@]}"; do
  $RL evaluate --model "$OUT/$m/model.safetensors" --split test --n "$N" --attack pgd --eps $EPS \
    --steps 20 --no-progress --out "$OUT/$m/pgd20.json" > /dev/null
done
$RL evaluate --model "$OUT/fgsm-eps0.2/model.safetensors" --split test --n "$N" --attack fgsm \
  --attack pgd --eps 0.2 --steps 20 --no-progress --out "$OUT/fgsm-eps0.2/eval.json" > /dev/null

echo "== stress figures: $OUT/stress/"
STRESS_MODELS=()
for m in "${METHODS[@]}" fgsm-eps0.2; do STRESS_MODELS+=(--model "$m=$OUT/$m/model.safetensors"); done
mkdir -p "$OUT/stress"
$RL stress "${STRESS_MODELS[@]}" --dataset fashion-mnist --split test --n "$N_STRESS" \
  --eps 0,0.05,0.1,0.15,0.2 --pgd-steps 20 --steps "$STRESS_STEPS" --steps-eps $EPS \
  --no-progress --out "$OUT/stress" > "$OUT/stress/tables.md"

OUT="$OUT" N="$N" $PY - "${METHODS[@]}" <<'EOF'
import json, os, sys
out, n = os.environ["OUT"], os.environ["N"]

def lines(run):
    return [json.loads(x) for x in open(f"{out}/{run}/metrics.jsonl") if x.strip()]

def per_epoch(run, key):
    vals = [m.get(key, 0.0) for m in lines(run)]
    return sum(vals) / len(vals)

base = per_epoch("standard", "seconds")
print(f"\nFashion-MNIST, small-cnn, {lines('standard')[-1]['epoch']} epochs; clean and PGD-20 "
      f"(eps 0.1, step eps/4) on the first {n} test images\n")
print("| method | clean (%) | PGD-20 (%) | s/epoch | cost vs standard | guard s/epoch |")
print("|---|---|---|---|---|---|")
for m in sys.argv[1:]:
    ev = json.load(open(f"{out}/{m}/pgd20.json"))
    pgd = next(iter(ev["acc"].values()))
    sec = per_epoch(m, "seconds")
    print(f"| {m} | {100 * ev['clean_acc']:.2f} | {100 * pgd:.2f} | {sec:.1f} | "
          f"{sec / base:.2f}x | {per_epoch(m, 'guard_seconds'):.1f} |")
print("\nplain PyTorch PGD-AT script (lead's reference): 81.2 clean / 65.4 PGD-20 / 281 s for "
      "2 epochs (140.5 s/epoch)")
print("\nFGSM-AT at eps 0.2, per epoch: PGD-10 accuracy on a fixed training batch "
      "(catastrophic overfitting = a fall of more than 20 points)")
for m in lines("fgsm-eps0.2"):
    flag = "  <- catastrophic overfitting" if m.get("catastrophic_overfitting") else ""
    print(f"  epoch {m['epoch']}: train-batch PGD acc {100 * m['overfit_pgd_acc']:.1f}%, "
          f"val PGD acc {100 * m.get('val_robust_acc', float('nan')):.1f}%{flag}")
ev = json.load(open(f"{out}/fgsm-eps0.2/eval.json"))
accs = ", ".join(f"{k}: {100 * v:.2f}%" for k, v in ev["acc"].items())
print(f"  test (eps 0.2): clean {100 * ev['clean_acc']:.2f}%, {accs}")
print(f"\nstress figures: {out}/stress/fgsm-eps.png, pgd-eps.png, pgd-steps.png; Table I: "
      f"{out}/stress/clean.md")
EOF
