"""params.yaml ``split``: fractions, rebalancing, near-duplicate grouping."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stages.common.schema import FRACTION, ParamsError, bounds


@dataclass
class Fractions:
    train: float = field(default=0.7, metadata=FRACTION)
    val: float = field(default=0.15, metadata=FRACTION)
    test: float = field(default=0.15, metadata=FRACTION)

    def validate(self, path: str) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ParamsError(path, f"train + val + test must sum to 1 (got {total:g})")
        if self.train == 0:
            raise ParamsError(f"{path}.train", "must be > 0")


@dataclass
class Rebalance:
    # none | mean | max | min: target count per class from the class sizes;
    # fraction: that fraction of the largest class; count: a fixed number.
    mode: Literal["none", "mean", "max", "min", "fraction", "count"] = "none"
    fraction: float = field(default=1.0, metadata=bounds(gt=0.0, le=1.0))
    count: int = field(default=0, metadata=bounds(ge=0))

    def validate(self, path: str) -> None:
        if self.mode == "count" and self.count < 1:
            raise ParamsError(f"{path}.count", "must be >= 1 when mode is 'count'")


@dataclass
class Split:
    fractions: Fractions = field(default_factory=Fractions)
    rebalance: Rebalance = field(default_factory=Rebalance)
    class_weights: Literal["none", "balanced"] = "none"
    # perceptual-hash bit distance within which images count as near duplicates and share
    # a split (transitively); -1: only byte-identical copies are grouped
    near_duplicates: int = field(default=4, metadata=bounds(ge=-1, le=32))
    # the full-resolution store (data/split/full) keeps each image's shorter side at most
    # this many pixels: >= a backbone's input size / 0.875 (256 for 224 px) leaves crop room
    store_size: int = field(default=256, metadata=bounds(ge=32, le=2048))
