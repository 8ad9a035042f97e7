"""Near-duplicate verification: the block-projection bound never drops a pair the exact test keeps."""
import numpy as np
import pytest

from stages.filter.thumbmatch import (
    block_projection,
    correlation_bound,
    thumb_similarity,
    unit_rows,
    verified_pairs,
    window,
)

MARGIN, SIDE = 1, 32


def smooth_thumbs(n: int, seed: int) -> np.ndarray:
    """(n, 34, 34, 3) uint8 blurry random pictures, like photo thumbnails (random noise would
    put every pair far below any threshold and test nothing)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 5, 5, 3)).astype(np.float64)
    up = np.kron(coarse, np.ones((1, 7, 7, 1)))[:, :SIDE + 2 * MARGIN, :SIDE + 2 * MARGIN]
    return np.clip(up + rng.normal(0, 6, up.shape), 0, 255).astype(np.uint8)


def near_copies(thumbs: np.ndarray, seed: int) -> np.ndarray:
    """Each thumbnail shifted by a pixel, brightened and noised: what the check must find."""
    rng = np.random.default_rng(seed)
    shifted = np.roll(thumbs, shift=(1, -1), axis=(1, 2)).astype(np.float64) * 1.1 + 8
    return np.clip(shifted + rng.normal(0, 4, thumbs.shape), 0, 255).astype(np.uint8)


def test_projection_matches_the_unit_window_it_summarises():
    thumbs = smooth_thumbs(5, seed=1)
    proj = block_projection(list(thumbs), MARGIN)
    for s, (dy, dx) in enumerate([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]):
        unit = unit_rows(window(thumbs, MARGIN, dy, dx)).reshape(5, 4, 8, 4, 8, 3)
        np.testing.assert_allclose(proj[s], unit.sum(axis=(2, 4)).reshape(5, -1) / 8, atol=1e-5)


def test_bound_is_never_below_the_exact_similarity():
    thumbs = np.concatenate([smooth_thumbs(60, seed=2), near_copies(smooth_thumbs(60, seed=2), seed=3)])
    rng = np.random.default_rng(4)
    pairs = np.concatenate([rng.integers(0, len(thumbs), size=(400, 2)),
                            np.stack([np.arange(60), np.arange(60) + 60], axis=1)])
    exact = thumb_similarity(thumbs[pairs[:, 0]], thumbs[pairs[:, 1]], MARGIN)
    bound = correlation_bound(block_projection(list(thumbs), MARGIN), pairs)
    assert (bound >= exact - 1e-5).all()
    assert (exact[-60:] > 0.95).all()          # the copies really are near duplicates
    assert (bound[:400] < 0.9).mean() > 0.5    # and the bound rules most other pairs out cheaply


@pytest.mark.parametrize("threshold", [0.9, 0.945, 0.99])
def test_verified_pairs_equal_the_exact_test(threshold):
    originals = smooth_thumbs(80, seed=5)
    thumbs = list(np.concatenate([originals, near_copies(originals[:30], seed=6)]))
    i, j = np.triu_indices(len(thumbs), k=1)
    pairs = np.stack([i, j], axis=1).astype(np.int64)
    exact = thumb_similarity(np.stack([thumbs[a] for a in i]), np.stack([thumbs[b] for b in j]), MARGIN)
    found = verified_pairs(thumbs, pairs, threshold, MARGIN)
    np.testing.assert_array_equal(found, pairs[exact >= threshold])
    if threshold < 0.99:
        assert len(found) >= 30   # the 30 copies, at least


def test_no_pairs_and_a_side_the_blocks_do_not_divide():
    thumbs = list(smooth_thumbs(3, seed=7))
    assert verified_pairs(thumbs, np.zeros((0, 2), np.int64), 0.9, MARGIN).shape == (0, 2)
    with pytest.raises(ValueError, match="multiple of the projection block"):
        block_projection([t[:30, :30] for t in thumbs], MARGIN)
