#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Slow end-to-end tests are skipped unless
# ROBUSTLAB_SLOW=1 is set; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A real browser for the test that opens report.html (skipped with a message where none can be
# installed): Debian's chromium, where apt is available.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
  echo "test: installing Debian's chromium for the HTML report test"
  $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; } \
    || echo "test: apt could not install chromium; the browser test will be skipped"
fi
exec .venv/bin/python -m pytest -q "$@"
