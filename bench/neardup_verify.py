"""Near-duplicate verification at scale: the exact thumbnail test on every perceptual-hash
candidate pair (before) against the block-projection bound first (stages/filter/thumbmatch.py).

    python bench/neardup_verify.py MANIFEST [--limit 10000 30000] [--exact-sample 300000]

MANIFEST is a crawled manifest.jsonl, e.g. bench/scale.py's <work>/repo-100000/data/raw/
manifest.jsonl. For each limit (the first N rows): the quality scores (which carry the
thumbnails), the candidate pairs at params.yaml's filter.quality.near_max_distance, then
both verifications side by side in this process; the two must find the same pairs. When
there are more candidates than --exact-sample, the exact-only time is measured on a random
sample of that many pairs and scaled to all of them (printed as "est."), and the equality
check covers the sample.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from stages.filter.measure_pool import measure_all  # noqa: E402
from stages.filter.quality import THUMB_MARGIN, phash_pairs  # noqa: E402
from stages.filter.thumbmatch import EXACT_CHUNK, thumb_similarity, verified_pairs  # noqa: E402


def exact_only(thumbs: list, pairs: np.ndarray, threshold: float) -> np.ndarray:
    """What the filter did before the bound: the exact test on every candidate."""
    keep = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), EXACT_CHUNK):
        part = pairs[start:start + EXACT_CHUNK]
        a, b = np.stack([thumbs[i] for i in part[:, 0]]), np.stack([thumbs[j] for j in part[:, 1]])
        keep[start:start + EXACT_CHUNK] = thumb_similarity(a, b, THUMB_MARGIN) >= threshold
    return pairs[keep]


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def one_size(rows: list[dict], quality: dict, exact_sample: int) -> None:
    stats = measure_all([row["path"] for row in rows], quality["analysis_size"], quality["draft"], 0)
    thumbs = [s.thumb for s in stats]
    pairs, gen_s = timed(phash_pairs, stats, quality["near_max_distance"])
    threshold = quality["near_min_correlation"]
    found, new_s = timed(verified_pairs, thumbs, pairs, threshold, THUMB_MARGIN)
    sample = pairs
    if len(pairs) > exact_sample:
        sample = pairs[np.sort(np.random.default_rng(0).choice(len(pairs), exact_sample, replace=False))]
    old, old_s = timed(exact_only, thumbs, sample, threshold)
    found_in_sample = verified_pairs(thumbs, sample, threshold, THUMB_MARGIN)
    same = np.array_equal(old, found_in_sample)
    old_total = old_s * len(pairs) / max(len(sample), 1)
    est = " est." if len(sample) < len(pairs) else ""
    print(f"N={len(rows)}: {len(pairs)} candidate pairs (hash search {gen_s:.1f} s), {len(found)} verified; "
          f"exact only {old_total:.1f} s{est}, bound + exact {new_s:.1f} s: x{old_total / max(new_s, 1e-9):.1f}; "
          f"same pairs: {same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--limit", type=int, nargs="+", default=[10_000])
    parser.add_argument("--exact-sample", type=int, default=300_000)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
    quality = yaml.safe_load((REPO / "params.yaml").read_text())["filter"]["quality"]
    root = args.manifest.resolve().parents[2]      # manifest paths are relative to the repo root
    rows = [{**row, "path": str(root / row["path"])} for row in rows]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for limit in args.limit:
        one_size(rows[:limit], quality, args.exact_sample)


if __name__ == "__main__":
    main()
