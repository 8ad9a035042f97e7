"""Near-duplicate index: exact agreement with brute force, grouping for split."""
import numpy as np
import pytest
from PIL import Image

from stages.shared.neardup import (HammingIndex, brute_force_pairs, choose_chunks, group_near_duplicates,
                            hex_to_uint64, phash_hex, union_find_groups)


def planted_hashes(n: int, n_planted: int, max_flips: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes with some copies of others, a few bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2)
    hashes += rng.integers(0, 2, size=n, dtype=np.uint64)
    for _ in range(n_planted):
        src, dst = rng.integers(n, size=2)
        value = int(hashes[src])
        for bit in rng.choice(64, size=rng.integers(0, max_flips + 1), replace=False):
            value ^= 1 << int(bit)
        hashes[dst] = value
    return hashes


@pytest.mark.parametrize("max_distance", [0, 1, 3, 5, 6, 8, 10])
def test_pairs_match_brute_force(max_distance):
    hashes = planted_hashes(2000, 400, max_flips=12, seed=max_distance)
    expected = brute_force_pairs(hashes, max_distance)
    found = HammingIndex(hashes, max_distance).pairs()
    assert len(expected) > 0
    np.testing.assert_array_equal(found, expected)


def test_every_chunk_count_is_exact(monkeypatch):
    import stages.shared.neardup as nd
    hashes = planted_hashes(500, 200, max_flips=9, seed=7)
    expected = brute_force_pairs(hashes, 7)
    for chunks in range(2, 9):   # 1 chunk at radius 7 would probe 6e8 values
        monkeypatch.setattr(nd, "choose_chunks", lambda n, d, m=chunks: m)
        index = HammingIndex(hashes, 7)
        assert index.chunks == chunks
        np.testing.assert_array_equal(index.pairs(), expected)


def test_query_matches_brute_force():
    hashes = planted_hashes(1000, 300, max_flips=6, seed=3)
    index = HammingIndex(hashes, 6)
    for q in hashes[:50]:
        dist = np.bitwise_count(hashes ^ q)
        np.testing.assert_array_equal(index.query(int(q)), np.nonzero(dist <= 6)[0])


def test_chunk_choice_probes_few_values_for_large_inputs():
    # 100k hashes at distance 6: 4 chunks of 16 bits, radius 1 (17 probes each)
    assert choose_chunks(100_000, 6) == 4
    assert choose_chunks(10, 0) == 1


def test_union_find_groups_transitive():
    pairs = np.array([[0, 3], [3, 5], [1, 2]])
    assert union_find_groups(6, pairs) == [0, 1, 1, 0, 2, 0]


def test_group_near_duplicates_from_phash_and_from_path(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    other = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    paths = []
    for name, arr in [("a", base), ("b", other), ("c", np.clip(base.astype(int) + 3, 0, 255))]:
        path = tmp_path / f"{name}.png"
        Image.fromarray(arr.astype(np.uint8)).save(path)
        paths.append(str(path))
    rows = [{"path": p} for p in paths]
    assert group_near_duplicates(rows, 4) == [0, 1, 0]
    with_hash = [{"path": "missing.png", "phash": phash_hex(Image.open(p))} for p in paths]
    assert group_near_duplicates(with_hash, 4) == [0, 1, 0]
    assert group_near_duplicates([], 4) == []


def test_hex_round_trip():
    assert hex_to_uint64(["ffffffffffffffff", "0000000000000001"]).tolist() == [2**64 - 1, 1]
