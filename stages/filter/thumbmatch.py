"""Near-duplicate verification: does a pair of images' colour thumbnails correlate at least
``c`` at some shift of up to ``margin`` pixels?

The perceptual-hash candidates grow faster than the image count on a corpus of similar
pictures (the demo at 32 px: 0.22 M candidate pairs at 10k images, 8.8 M at 95k), and the
exact test costs nine 3,072-number correlations per pair. So every pair first meets a
necessary condition that is ~60x cheaper. For unit vectors u, v and an orthogonal
projection P (Cauchy-Schwarz on the part P drops):

    u.v = Pu.Pv + (I-P)u.(I-P)v  <=  Pu.Pv + sqrt(1 - |Pu|^2) sqrt(1 - |Pv|^2)

P is the average over BLOCK x BLOCK pixel blocks: 48 numbers per window, computed once per
image and shift. A pair whose bound is below ``c`` at every shift cannot pass the exact
test, so the result is exactly the exact test's; on the 10k demo 2.3 % of the candidates
survive the bound (bench/neardup.py measures it).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK = 8              # pixels per side of a projection block (the 32 px window -> 4 x 4 x 3 numbers)
BOUND_SLACK = 1e-4     # float32 rounding in the bound: never drop a pair the exact test would keep
IMAGE_CHUNK = 4096     # images per step when projecting (bounds the float32 windows in memory)
PAIR_CHUNK = 65536     # candidate pairs per step of the bound
EXACT_CHUNK = 4096     # pairs per step of the exact test


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D) float32, each row zero mean and unit norm (brightness-blind)."""
    x = x.reshape(len(x), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def shifts(margin: int) -> list[tuple[int, int]]:
    """Every (dy, dx) offset within ``margin``, row-major; (0, 0) is in the middle."""
    return [(dy, dx) for dy in range(-margin, margin + 1) for dx in range(-margin, margin + 1)]


def window(thumbs: np.ndarray, margin: int, dy: int, dx: int) -> np.ndarray:
    """The (side x side) window of (N, side + 2 margin, ..., 3) thumbnails at offset (dy, dx)."""
    side = thumbs.shape[1] - 2 * margin
    return thumbs[:, margin + dy:margin + dy + side, margin + dx:margin + dx + side]


def thumb_similarity(a: np.ndarray, b: np.ndarray, margin: int) -> np.ndarray:
    """Best normalised correlation of paired thumbnails over shifts of up to ``margin`` pixels.

    a, b: (P, T+2M, T+2M, 3) uint8 -> (P,) in [-1, 1]. Mean-centring and unit norm make
    it blind to a brightened or dimmed copy; the shifts absorb a pixel or two of offset.
    """
    core = unit_rows(window(a, margin, 0, 0))
    best = np.full(len(a), -1.0, dtype=np.float32)
    for dy, dx in shifts(margin):
        best = np.maximum(best, np.einsum("pd,pd->p", core, unit_rows(window(b, margin, dy, dx))))
    return best


def _row_blocks(pixels: np.ndarray, margin: int, side: int) -> dict[int, np.ndarray]:
    """Per row offset dy: sums over BLOCK rows of the window's rows, (n, grid, W, C)."""
    grid = side // BLOCK
    return {dy: pixels[:, margin + dy:margin + dy + side].reshape(len(pixels), grid, BLOCK, *pixels.shape[2:]).sum(2)
            for dy in range(-margin, margin + 1)}


def _blocks(rows: np.ndarray, margin: int, dx: int, side: int) -> np.ndarray:
    """Block sums of one window from its row-block sums: (n, grid, grid, C)."""
    grid = side // BLOCK
    cols = rows[:, :, margin + dx:margin + dx + side]
    return cols.reshape(len(rows), grid, grid, BLOCK, rows.shape[-1]).sum(3)


def block_projection(thumbs: Sequence[np.ndarray], margin: int) -> np.ndarray:
    """(S, N, K) float32: each image's unit window (``unit_rows`` of it) at each shift, in
    coordinates of the orthonormal basis of block-constant images (a block's sum / BLOCK).

    A window's mean, norm and block sums come from block sums of the pixels and of their
    squares, shared by the shifts, instead of a pass over each window's 3,072 numbers;
    stacked a chunk at a time, so the thumbnails are never copied whole."""
    side = thumbs[0].shape[0] - 2 * margin
    if side % BLOCK:
        raise ValueError(f"thumbnail side {side} is not a multiple of the projection block {BLOCK}")
    channels = thumbs[0].shape[-1]
    count = side * side * channels
    out = np.empty((len(shifts(margin)), len(thumbs), (side // BLOCK) ** 2 * channels), dtype=np.float32)
    for start in range(0, len(thumbs), IMAGE_CHUNK):
        pixels = np.stack(thumbs[start:start + IMAGE_CHUNK]).astype(np.float64)
        rows, rows_sq = _row_blocks(pixels, margin, side), _row_blocks(pixels ** 2, margin, side)
        for s, (dy, dx) in enumerate(shifts(margin)):
            blocks = _blocks(rows[dy], margin, dx, side)                          # (n, g, g, C)
            mean = blocks.sum(axis=(1, 2, 3)) / count
            total_sq = _blocks(rows_sq[dy], margin, dx, side).sum(axis=(1, 2, 3))
            norm = np.sqrt(np.clip(total_sq - count * mean ** 2, 0.0, None)) + 1e-6
            coords = (blocks - BLOCK * BLOCK * mean[:, None, None, None]) / (BLOCK * norm[:, None, None, None])
            out[s, start:start + len(pixels)] = coords.reshape(len(pixels), -1)
    return out


def correlation_bound(proj: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(P,) upper bound on ``thumb_similarity`` of each pair (i, j) from ``block_projection``."""
    centre = len(proj) // 2
    residual = np.clip(1.0 - (proj ** 2).sum(axis=2), 0.0, None)   # (S, N): |(I-P)u|^2
    best = np.full(len(pairs), -np.inf, dtype=np.float32)
    for start in range(0, len(pairs), PAIR_CHUNK):
        i, j = pairs[start:start + PAIR_CHUNK, 0], pairs[start:start + PAIR_CHUNK, 1]
        qa, ra = proj[centre][i], residual[centre][i]
        part = best[start:start + PAIR_CHUNK]
        for s in range(len(proj)):
            bound = np.einsum("pk,pk->p", qa, proj[s][j]) + np.sqrt(ra * residual[s][j])
            np.maximum(part, bound, out=part)
    return best


def verified_pairs(thumbs: Sequence[np.ndarray], pairs: np.ndarray, min_correlation: float,
                   margin: int) -> np.ndarray:
    """The candidate pairs (indices into ``thumbs``) whose thumbnails correlate at least
    ``min_correlation`` at some shift: the exact test, run only where the bound allows it."""
    if len(pairs) == 0:
        return pairs
    used = np.unique(pairs)
    position = np.full(int(used.max()) + 1, -1, dtype=np.int64)
    position[used] = np.arange(len(used))
    proj = block_projection([thumbs[k] for k in used], margin)
    maybe = pairs[correlation_bound(proj, position[pairs]) >= min_correlation - BOUND_SLACK]
    keep = np.zeros(len(maybe), dtype=bool)
    for start in range(0, len(maybe), EXACT_CHUNK):
        part = maybe[start:start + EXACT_CHUNK]
        a = np.stack([thumbs[i] for i in part[:, 0]])
        b = np.stack([thumbs[j] for j in part[:, 1]])
        keep[start:start + EXACT_CHUNK] = thumb_similarity(a, b, margin) >= min_correlation
    return maybe[keep]
