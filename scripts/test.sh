#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Slow end-to-end tests are skipped unless
# ROBUSTLAB_SLOW=1 is set; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
