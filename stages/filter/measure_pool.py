"""Quality scores of many images on every core: chunks of paths go to a process pool and the
scores come back in input order, so the output is the same for any number of workers.

Workers start from a fork server that has imported only this module and the quality
checks (not the stage's torch): starting one costs milliseconds, and no thread pool of the
parent is copied into a fork.
"""
from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial

from tqdm import tqdm

from stages.filter.quality import ImageStats, measure

CHUNK = 32   # images per task: large enough to hide the pickling, small enough to balance two cores
# fewer images than this are measured in this process: starting the fork server and its
# workers (~0.5 s) would cost more than a second core saves on them
POOL_MIN_IMAGES = 512


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(workers: int, n_images: int) -> int:
    """``workers`` (0: every core), never more than there are chunks to hand out; 1 for
    fewer than POOL_MIN_IMAGES images."""
    wanted = available_cores() if workers == 0 else workers
    if n_images < POOL_MIN_IMAGES:
        return 1
    return max(1, min(wanted, math.ceil(n_images / CHUNK)))


def _measure_chunk(paths: Sequence[str], analysis_size: int, draft: bool) -> list[ImageStats]:
    return [measure(path, analysis_size, draft) for path in paths]


def _pool_context():
    """A fork server where the platform has one (Linux), else spawn (macOS, Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # imported once in the server, not in each worker (imagehash imports scipy.fftpack at its first phash)
    context.set_forkserver_preload([__name__, "scipy.fftpack"])
    return context


@contextmanager
def _mapper(n_workers: int):
    """An order-keeping ``map``: the builtin for one worker, else a process pool's."""
    if n_workers == 1:
        yield map
        return
    with ProcessPoolExecutor(n_workers, mp_context=_pool_context()) as pool:
        yield pool.map


def measure_all(paths: Sequence[str], analysis_size: int, draft: bool = True, workers: int = 0,
                desc: str = "filter: quality") -> list[ImageStats]:
    """``measure`` of every path, in order, on ``workers`` processes (0: every core; 1: this one)."""
    chunks = [list(paths[i:i + CHUNK]) for i in range(0, len(paths), CHUNK)]
    job = partial(_measure_chunk, analysis_size=analysis_size, draft=draft)
    stats: list[ImageStats] = []
    with tqdm(total=len(paths), desc=desc, leave=False) as bar, _mapper(worker_count(workers, len(paths))) as run:
        for part in run(job, chunks):
            stats += part
            bar.update(len(part))
    return stats
