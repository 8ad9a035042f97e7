"""Near-duplicate search over 64-bit perceptual hashes, and grouping for split.

The index is multi-index hashing (Norouzi et al., 2012): the 64 bits are cut into
``m`` chunks; by the pigeonhole principle two hashes within Hamming distance ``d``
agree on some chunk to within ``d // m`` bits. Each chunk gets a sorted table;
probing it with every value within that small radius yields candidate pairs,
which are then checked on all 64 bits. Everything is vectorised numpy, so 100k
hashes take about a second instead of the 5e9 comparisons of brute force.

``group_near_duplicates(rows, max_distance)`` is the one function split needs:
it returns a group id per manifest row (union-find over near-duplicate pairs),
so a near-duplicate pair never straddles train/val/test.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Iterable, Sequence

import imagehash
import numpy as np
from PIL import Image

from stages.shared.packs import open_image
HASH_BITS = 64  # imagehash.phash with hash_size=8
DIRECT_TABLE_BITS = 22  # chunks this narrow get a 2**bits-entry lookup table (<= 32 MiB)


# --- hashes -------------------------------------------------------------------
def phash_hex(img: Image.Image) -> str:
    """The 64-bit DCT perceptual hash of a PIL image, as 16 hex digits."""
    return str(imagehash.phash(img, hash_size=8))


def phash_file(path: str | Path) -> str:
    """The perceptual hash of an image file or pack member (stages.shared.packs)."""
    with open_image(path) as opened, Image.open(opened) as img:
        return phash_hex(img.convert("RGB"))


def hex_to_uint64(hexes: Iterable[str]) -> np.ndarray:
    """16-digit hex strings -> (N,) uint64."""
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise Hamming distance between uint64 arrays (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


# --- the index ----------------------------------------------------------------
def _probe_count(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(radius + 1))


def choose_chunks(n_items: int, max_distance: int) -> int:
    """Chunk count minimising the estimated work of ``pairs()``.

    Work ~ passes x N x (1 + 0.2 x expected bucket size): one pass per chunk and probe
    value, and a candidate check costs about a fifth of a probe (measured on 100k random
    hashes). Chunks wider than the direct table need a binary search, ~4x a gather.
    """
    best, best_cost = 1, math.inf
    for m in range(1, min(max_distance + 1, 16) + 1):
        width = HASH_BITS // m
        passes = m * _probe_count(width, max_distance // m)
        cost = passes * (1.0 + 0.2 * n_items / 2.0 ** width)
        if width > DIRECT_TABLE_BITS:
            cost *= 4
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def _chunk_bounds(m: int) -> list[tuple[int, int]]:
    """(shift, width) per chunk; widths differ by at most one bit."""
    bounds, shift = [], 0
    for k in range(m):
        width = HASH_BITS // m + (1 if k < HASH_BITS % m else 0)
        bounds.append((shift, width))
        shift += width
    return bounds


def _probe_masks(width: int, radius: int) -> np.ndarray:
    """Every value below 2**width with at most ``radius`` bits set."""
    masks = [0]
    for k in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in itertools.combinations(range(width), k)]
    return np.array(masks, dtype=np.uint64)


class HammingIndex:
    """Multi-index hashing over (N,) uint64 hashes for one search radius."""

    def __init__(self, hashes: np.ndarray, max_distance: int):
        self.hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        self.max_distance = int(max_distance)
        self.chunks = choose_chunks(len(self.hashes), self.max_distance)
        self.radius = self.max_distance // self.chunks
        self.tables = []   # per chunk: (shift, width, order (N,), sorted values (N,), starts)
        for shift, width in _chunk_bounds(self.chunks):
            values = self._chunk(self.hashes, shift, width)
            order = np.argsort(values, kind="stable")
            # narrow chunks get a direct-address table (counting sort): starts[v] is the
            # first sorted position of value v, one gather instead of a binary search
            starts = None
            if width <= DIRECT_TABLE_BITS:
                counts = np.bincount(values.astype(np.int64), minlength=1 << width)
                starts = np.concatenate([[0], np.cumsum(counts)])
            self.tables.append((shift, width, order, values[order], starts))

    @staticmethod
    def _chunk(hashes: np.ndarray, shift: int, width: int) -> np.ndarray:
        mask = np.uint64((1 << width) - 1)
        return (hashes >> np.uint64(shift)) & mask

    def _candidates(self, queries: np.ndarray) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """Yield (query index, item index) arrays sharing a chunk within the radius."""
        for shift, width, order, sorted_values, starts in self.tables:
            q_values = self._chunk(queries, shift, width)
            if starts is not None:
                q_values = q_values.astype(np.int64)
            for mask in _probe_masks(width, self.radius):
                lo, hits = self._lookup(q_values ^ mask.astype(q_values.dtype), sorted_values, starts)
                total = int(hits.sum())
                if total == 0:
                    continue
                q_idx = np.repeat(np.arange(len(queries)), hits)
                # position inside each query's run of hits: 0, 1, ..., hits-1
                offset = np.arange(total) - np.repeat(np.cumsum(hits) - hits, hits)
                yield q_idx, order[np.repeat(lo, hits) + offset]

    @staticmethod
    def _lookup(probe: np.ndarray, sorted_values: np.ndarray, starts: np.ndarray | None):
        """(first sorted position, number of equal values) per probe value."""
        if starts is not None:
            lo = starts[probe]
            return lo, starts[probe + 1] - lo
        lo = np.searchsorted(sorted_values, probe, side="left")
        return lo, np.searchsorted(sorted_values, probe, side="right") - lo

    def pairs(self) -> np.ndarray:
        """All pairs (i < j) within ``max_distance``, as a sorted (P, 2) int64 array."""
        n = len(self.hashes)
        found = [np.zeros(0, dtype=np.int64)]
        for i, j in self._candidates(self.hashes):
            keep = i < j
            i, j = i[keep], j[keep]
            close = hamming(self.hashes[i], self.hashes[j]) <= self.max_distance
            found.append(i[close].astype(np.int64) * n + j[close])
        codes = np.unique(np.concatenate(found))   # one code per pair, deduplicated
        return np.stack([codes // max(n, 1), codes % max(n, 1)], axis=1)

    def query(self, value: int) -> np.ndarray:
        """Indices of stored hashes within ``max_distance`` of one hash, ascending."""
        queries = np.array([value], dtype=np.uint64)
        found = [np.zeros(0, dtype=np.int64)]
        for _, j in self._candidates(queries):
            close = hamming(self.hashes[j], queries[0]) <= self.max_distance
            found.append(j[close].astype(np.int64))
        return np.unique(np.concatenate(found))


def brute_force_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Reference O(N^2) search (tests and the benchmark's check)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    dist = hamming(hashes[:, None], hashes[None, :])          # (N, N)
    i, j = np.nonzero(np.triu(dist <= max_distance, k=1))
    return np.stack([i, j], axis=1).astype(np.int64)


# --- grouping -------------------------------------------------------------------
def union_find_groups(n: int, pairs: np.ndarray) -> list[int]:
    """Connected components of ``pairs`` over n items; ids 0.. in order of first item."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]   # path halving
            x = parent[x]
        return x

    for a, b in pairs.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    ids: dict[int, int] = {}
    return [ids.setdefault(root(x), len(ids)) for x in range(n)]


def group_near_duplicates(manifest_rows: Sequence[dict], max_distance: int) -> list[int]:
    """Group id per manifest row: rows whose perceptual hashes are within ``max_distance``
    bits (transitively) share an id. Ids run 0..G-1 in order of each group's first row.

    Each row's hash is its ``phash`` (16 hex digits, as the filtered manifest stores
    it); a row without one is hashed from the image at its ``path``.
    """
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0 (got {max_distance})")
    hexes = [row.get("phash") or phash_file(row["path"]) for row in manifest_rows]
    hashes = hex_to_uint64(hexes)
    pairs = HammingIndex(hashes, max_distance).pairs() if len(hashes) else np.zeros((0, 2), np.int64)
    return union_find_groups(len(hashes), pairs)
