"""Time DVC's no-op: `dvc repro` and `dvc status` on a finished run, nothing changed.

    python bench/dvc_noop.py [REPO] [--runs 7]

REPO is a kiln checkout whose chain has run to the end (default: this one). Each command
runs once to warm the OS caches and DVC's state database, then --runs times; the median,
minimum and maximum wall seconds and the median CPU seconds (user + system: what the
command itself costs, which other jobs on the cores do not stretch) are printed with the
load average before and after. Targets on 2 cores: no-op repro <= 1.5 s,
status <= 1 s. Fails when a "no-op" repro runs a stage or status reports a change.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"repro": 1.5, "status": 1.0}


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, the command and its children), stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return seconds, cpu, proc.stdout


def check_noop(name: str, out: str) -> None:
    if name == "repro" and "Running stage" in out:
        sys.exit(f"dvc repro is not a no-op here:\n{out}")
    if name == "status" and "up to date" not in out:
        sys.exit(f"dvc status reports changes:\n{out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    dvc = shutil.which("dvc") or sys.exit("dvc is not on PATH")
    print(f"{args.repo}: {len(list((args.repo / 'dvc.lock').read_text().splitlines()))} dvc.lock lines, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} before")
    for name in ("repro", "status"):
        cmd = [dvc, name]
        check_noop(name, timed(cmd, args.repo)[2])          # warm-up
        runs, cpus = [], []
        for _ in range(args.runs):
            seconds, cpu, out = timed(cmd, args.repo)
            check_noop(name, out)
            runs.append(seconds)
            cpus.append(cpu)
        median = statistics.median(runs)
        verdict = "ok" if median <= TARGETS[name] else "over"
        print(f"dvc {name:6s} median {median:.2f} s wall (min {min(runs):.2f}, max {max(runs):.2f}), "
              f"{statistics.median(cpus):.2f} s CPU, {args.runs} runs; target <= {TARGETS[name]} s: {verdict}")
    print(f"load {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
