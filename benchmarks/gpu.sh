#!/usr/bin/env bash
# The prepared GPU benchmark of issue 14 (benchmarks/gpu_bench.py): PGD-10 against its bound and
# torchattacks, adversarial-training epochs against plain training, purifier training, PGD-20
# through a purified model, peak GPU memory, and the issue's goals as PASS/FAIL lines.
#
#   bash benchmarks/gpu.sh --out gpu.json                    # one GPU: under 8 minutes
#   bash benchmarks/gpu.sh --out gpu.json --smoke-paper      # + one epoch of the paper preset
#   bash benchmarks/gpu.sh --device cpu --tiny --out f.json  # toy sizes, on a CPU (the tests)
#
# The interpreter: $PYTHON, else the repository's .venv, else python3.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then py="$here/../.venv/bin/python"; else py=python3; fi
fi
export ROBUSTLAB_OFFLINE="${ROBUSTLAB_OFFLINE:-1}"  # synthetic data only: never download
cd "$here/.."
exec "$py" "$here/gpu_bench.py" "$@"
