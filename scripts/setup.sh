#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with robustlab (editable) and its test extras,
# and Fashion-MNIST where Debian's package can provide it. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the package metadata changed since the last successful install.
stamp=.venv/.robustlab-install-stamp
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing robustlab and its dependencies into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
  echo "$want" > "$stamp"
fi

# Fashion-MNIST: Debian's package where apt is available; otherwise robustlab downloads it through
# torchvision the first time it is loaded.
if [ ! -e /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
  echo "setup: installing Debian's dataset-fashion-mnist"
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } \
    || echo "setup: apt could not install dataset-fashion-mnist; robustlab will try a torchvision download"
fi
