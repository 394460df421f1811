#!/usr/bin/env bash
# The main job: set up (idempotent), then reproduce both reports at the quick preset on
# Fashion-MNIST on the CPU: every table and figure, and report.html. Safe to run twice: finished
# steps are cached and an interrupted run continues where it stopped. OUT=dir changes the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/reproduce-quick}
.venv/bin/robustlab reproduce all --preset quick --out "$OUT" --no-progress
echo "quickstart: open $OUT/report.html (tables in $OUT/*/tables, figures in $OUT/*/figures)"
