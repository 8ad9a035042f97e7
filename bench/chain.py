"""Wall time of every stage of the default chain, one stage at a time.

    python bench/chain.py [--repo DIR] [--stages params crawl ...] [--force] [--json OUT]

DVC records no stage timings (dvc.lock holds hashes only), so this runs the chain itself:
``dvc repro --single-item <stage>`` for each stage of ``dvc status``'s topological order
(``dvc dag --full`` read as a list), in the repository at --repo (a fresh clone, not the
working tree, so its outputs do not land in your checkout), and prints a table of seconds
per stage and the share of the total. ``--force`` reruns stages that are up to date (the
run-cache would otherwise restore them in a second). Run it on a quiet machine: on shared
cores the seconds measure the neighbours too.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="repository to run in (a clone)")
    parser.add_argument("--stages", nargs="+", help="these stages only, in this order (default: the whole DAG)")
    parser.add_argument("--force", action="store_true", help="rerun stages that are up to date")
    parser.add_argument("--json", type=Path, help="also write {stage: seconds} here")
    return parser.parse_args(argv)


def dag_order(repo: Path) -> list[str]:
    """Every stage name in an order where each comes after what it depends on."""
    out = subprocess.run(["dvc", "dag", "--full", "--dot"], cwd=repo, check=True, capture_output=True, text=True).stdout
    nodes, edges = [], []
    for line in out.splitlines():
        line = line.strip().rstrip(";")
        if "->" in line:
            src, dst = (part.strip().strip('"') for part in line.split("->"))
            edges.append((src, dst))
        elif line.startswith('"'):
            nodes.append(line.split('"')[1])
    return topological(nodes, edges)


def topological(nodes: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Kahn's algorithm, ties broken by the order the nodes were listed."""
    incoming = {node: {src for src, dst in edges if dst == node} for node in nodes}
    order = []
    while incoming:
        ready = [node for node in nodes if node in incoming and not incoming[node]]
        if not ready:
            raise SystemExit(f"bench/chain.py: the DAG has a cycle among {sorted(incoming)}")
        for node in ready:
            order.append(node)
            del incoming[node]
        for deps in incoming.values():
            deps.difference_update(ready)
    return order


def time_stage(repo: Path, stage: str, force: bool) -> float:
    command = ["dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    start = time.perf_counter()
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise SystemExit(f"bench/chain.py: {stage} failed after {seconds:.0f}s: {' '.join(tail)}")
    return seconds


def main(argv=None) -> None:
    args = parse_args(argv)
    stages = args.stages or dag_order(args.repo)
    seconds = {}
    for stage in stages:
        seconds[stage] = time_stage(args.repo, stage, args.force)
        print(f"{stage:<28} {seconds[stage]:8.1f} s", file=sys.stderr, flush=True)
    total = sum(seconds.values())
    print("| stage | seconds | share |\n|---|---|---|")
    for stage, value in seconds.items():
        print(f"| {stage} | {value:.1f} | {value / max(total, 1e-9):.0%} |")
    print(f"| **total** | {total:.1f} | |")
    if args.json:
        args.json.write_text(json.dumps(seconds, indent=1))


if __name__ == "__main__":
    main()
