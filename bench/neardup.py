"""Benchmark: near-duplicate search over 100k perceptual hashes, and the filter's images/s.

    python bench/neardup.py [--n 100000] [--distances 6 8 10 14] [--images 400]

1. Multi-index hashing (stages/neardup.py) over N random 64-bit hashes with 1% planted
   near-duplicates; the found pairs are checked against brute force on a subset and the
   planted pairs must all be found. Target: <= 10 s for 100k hashes on 2 cores.
2. The filter's throughput on synthetic 64 px PNGs: quality scores (decode + every
   check's measurements), and a 3-member ensemble's inference: the from-scratch bnconv at
   32 px and the default mobilenet_v2 probe at 64 px (its frozen trunk's features included).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from stages.filter.ensemble import build_member, ensemble_probs, member_inputs  # noqa: E402
from stages.shared.neardup import HammingIndex, brute_force_pairs  # noqa: E402
from stages.filter.config import FilterNet  # noqa: E402
from stages.filter.quality import measure  # noqa: E402


def planted(n: int, max_flips: int, seed: int = 0) -> tuple[np.ndarray, set]:
    """Random hashes; 1% are copies of another with up to ``max_flips`` bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    pairs = set()
    for dst in rng.choice(n, size=n // 100, replace=False):
        src = int(rng.integers(n))
        if src == dst:
            continue
        value = int(hashes[src])
        for bit in rng.choice(64, size=int(rng.integers(0, max_flips + 1)), replace=False):
            value ^= 1 << int(bit)
        hashes[dst] = value
        pairs.add((min(src, int(dst)), max(src, int(dst))))
    return hashes, pairs


def bench_search(n: int, distance: int) -> None:
    hashes, planted_pairs = planted(n, distance)
    start = time.perf_counter()
    index = HammingIndex(hashes, distance)
    found = index.pairs()
    seconds = time.perf_counter() - start
    found_set = set(map(tuple, found.tolist()))
    missing = sum(1 for p in planted_pairs if p not in found_set and
                  bin(int(hashes[p[0]]) ^ int(hashes[p[1]])).count("1") <= distance)
    sub = 4000
    exact = np.array_equal(found[(found[:, 1] < sub)], brute_force_pairs(hashes[:sub], distance))
    print(f"near-dup search: {n} hashes, distance <= {distance}: {seconds:.2f} s "
          f"({index.chunks} chunks, radius {index.radius}), {len(found)} pairs, "
          f"planted missed {missing}, matches brute force on first {sub}: {exact}")


def synthetic_images(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(1)
    paths = []
    for k in range(count):
        img = rng.normal(rng.uniform(40, 200), 20, (64, 64, 3))
        y, x = rng.integers(8, 56, 2)
        img[max(0, y - 12):y + 12, max(0, x - 12):x + 12] = rng.uniform(0, 255, 3)
        path = folder / f"{k}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def bench_filter(count: int) -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        paths = synthetic_images(Path(tmp), count)
        start = time.perf_counter()
        for path in paths:
            measure(path, 128)
        quality_s = time.perf_counter() - start
    print(f"filter quality checks: {count / quality_s:.0f} images/s (64 px PNG: decode, scores, hashes)")
    nets = {"bnconv": FilterNet(), "mobilenet_v2 probe (the default)":
            FilterNet(arch="mobilenet_v2", image_size=64, hidden=[])}
    for name, net in nets.items():
        states = [build_member(net).state_dict() for _ in range(3)]
        images = torch.randint(0, 255, (count, 3, net.image_size, net.image_size), dtype=torch.uint8)
        ensemble_probs(states, net, member_inputs(images[:8], net, torch.device("cpu")), torch.device("cpu"))
        start = time.perf_counter()
        ensemble_probs(states, net, member_inputs(images, net, torch.device("cpu")), torch.device("cpu"))
        infer_s = time.perf_counter() - start
        print(f"filter ensemble inference, {name}: {count / infer_s:.0f} images/s "
              f"(3 members, {net.image_size} px, CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--distances", type=int, nargs="+", default=[6, 8, 10])
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    for distance in args.distances:
        bench_search(args.n, distance)
    bench_filter(args.images)


if __name__ == "__main__":
    main()
