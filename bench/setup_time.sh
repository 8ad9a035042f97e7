#!/usr/bin/env bash
# Time the README's setup (command 1 without `dvc repro`): a fresh clone into a temp dir, then
# `bash scripts/setup.sh`, then setup.sh once more (the idempotent rerun).
#   bash bench/setup_time.sh [REPO [REV]]   REPO: git path or URL (default: this checkout);
#                                           REV: a commit to check out (default: REPO's HEAD)
#   KILN_BENCH_COLD=1   empty package caches: a new UV_CACHE_DIR and PIP_NO_CACHE_DIR=1
#                       (default: uv's and pip's caches as they are on the machine)
# Chromium is expected to be installed already (setup.sh skips it); the clone is removed after.
set -euo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
rev=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "${KILN_BENCH_COLD:-0}" = 1 ]; then
  export UV_CACHE_DIR="$work/uv-cache" PIP_NO_CACHE_DIR=1
  cache="cold (empty uv cache, pip --no-cache-dir)"
else
  cache="warm (uv cache: $(du -sh "${UV_CACHE_DIR:-$HOME/.cache/uv}" 2>/dev/null | cut -f1 || echo none))"
fi

git clone -q "$repo" "$work/kiln"
[ -z "$rev" ] || git -C "$work/kiln" checkout -q "$rev"
cd "$work/kiln"

seconds() { local t0=$EPOCHREALTIME; "$@" >"$work/log" 2>&1 || { cat "$work/log" >&2; return 1; }
            awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }'; }
first=$(seconds bash scripts/setup.sh)
again=$(seconds bash scripts/setup.sh)
printf 'setup_time: %s @ %s\n' "$repo" "$(git rev-parse --short HEAD)"
printf 'setup_time: caches %s\n' "$cache"
printf 'setup_time: fresh clone: bash scripts/setup.sh  %6.1f s\n' "$first"
printf 'setup_time: rerun:       bash scripts/setup.sh  %6.1f s\n' "$again"
