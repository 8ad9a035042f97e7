"""How long does the demo corpus take to render? Prints wall and CPU seconds per worker count.

    PYTHONPATH=. python bench/demo_render.py [--per-class 1000] [--size 64] [--workers 1 2]

Renders exactly what the crawl renders for the local engine with the default params (pots,
distractors, junk for bowl and vase) in memory, without writing files, and reports wall time,
this process's plus its workers' CPU time, and images per second. CPU time is the
stable figure on a shared machine; wall time depends on what else is running.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

from stages.demo.__main__ import render_all
from stages.demo.corpus import plan_items


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--distractors", type=int, default=100)
    parser.add_argument("--junk", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    args = parser.parse_args()
    items = plan_items(["bowl", "vase"], 42, args.size, args.per_class, args.distractors, args.junk)
    load = os.getloadavg()[0]
    for workers in args.workers:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        rendered = render_all(items, workers)
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        print(f"demo render: {len(rendered)} items at {args.size}px, {workers} worker(s): "
              f"wall {wall:.1f}s ({len(rendered) / wall:.0f} img/s), CPU {cpu:.1f}s "
              f"({1000 * cpu / len(rendered):.1f} ms/img); load average before {load:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
