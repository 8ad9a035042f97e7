"""Class rebalancing of a training split (ML2a2's modes), as pure index arithmetic."""
from __future__ import annotations

import numpy as np


def target_count(counts: list[int], mode: str, *, fraction: float = 1.0, count: int = 0) -> int | None:
    """Images per class after rebalancing, or None to leave the split as it is."""
    present = [c for c in counts if c > 0]
    if mode == "none" or not present:
        return None
    if mode == "mean":
        return int(round(sum(present) / len(present)))
    if mode == "max":
        return max(present)
    if mode == "min":
        return min(present)
    if mode == "fraction":
        return max(1, int(round(fraction * max(present))))
    if mode == "count":
        return count
    raise ValueError(f"unknown rebalance mode {mode!r}")


def resample(indices: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Over- or under-sample ``indices`` to exactly ``target`` entries.

    Oversampling cycles through fresh permutations, so no image appears a third
    time before every image has appeared twice (nobody duplicated twice before
    all are duplicated once). Undersampling drops at random without replacement.
    """
    n = len(indices)
    if n == 0 or target == n:
        return indices.copy()
    if target < n:
        return np.sort(rng.choice(indices, size=target, replace=False))
    full_cycles, rest = divmod(target, n)
    parts = [indices] + [rng.permutation(indices) for _ in range(full_cycles - 1)]
    parts.append(rng.permutation(indices)[:rest])
    return np.concatenate(parts)


def rebalance(labels: np.ndarray, num_classes: int, mode: str, rng: np.random.Generator, *,
              fraction: float = 1.0, count: int = 0) -> np.ndarray:
    """Indices into ``labels`` after rebalancing every class to the mode's target."""
    counts = np.bincount(labels, minlength=num_classes).tolist()
    target = target_count(counts, mode, fraction=fraction, count=count)
    if target is None:
        return np.arange(len(labels))
    picked = [resample(np.flatnonzero(labels == c), target, rng) for c in range(num_classes)]
    return np.concatenate(picked)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    """sklearn's 'balanced' weights: n_samples / (n_classes * count_c); 0 for absent classes."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights.tolist()
