"""Rebalancing modes and the oversampling order."""
from __future__ import annotations

import numpy as np
import pytest

from stages.shared.rebalance import balanced_class_weights, rebalance, resample, target_count


@pytest.mark.parametrize("mode, kwargs, expected", [
    ("mean", {}, 20), ("max", {}, 40), ("min", {}, 5),
    ("fraction", {"fraction": 0.5}, 20), ("count", {"count": 7}, 7), ("none", {}, None),
])
def test_target_count(mode, kwargs, expected):
    assert target_count([5, 15, 40], mode, **kwargs) == expected


def test_oversampling_duplicates_everyone_once_before_anyone_twice():
    rng = np.random.default_rng(0)
    picked = resample(np.arange(10), 25, rng)
    counts = np.bincount(picked, minlength=10)
    assert len(picked) == 25 and counts.min() == 2 and counts.max() == 3
    # the first 20 entries already hold every image exactly twice
    assert (np.bincount(picked[:20], minlength=10) == 2).all()


def test_undersampling_drops_without_replacement():
    picked = resample(np.arange(100), 30, np.random.default_rng(1))
    assert len(picked) == 30 and len(set(picked.tolist())) == 30


def test_rebalance_reaches_target_for_every_class():
    labels = np.array([0] * 5 + [1] * 15 + [2] * 40)
    idx = rebalance(labels, 3, "mean", np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [20, 20, 20]
    assert set(idx[labels[idx] == 0].tolist()) == set(range(5))  # every minority image kept


def test_balanced_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 5 + [1] * 15 + [2] * 40)
    ours = balanced_class_weights(labels, 3)
    theirs = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert np.allclose(ours, theirs)
