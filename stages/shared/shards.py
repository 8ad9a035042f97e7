"""The training data format: pre-decoded, pre-resized uint8 tensors in one file per split.

A shard is a dict saved with ``torch.save`` and read back with
``weights_only=True`` (tensors, lists and strings only, no pickled code):

    images  uint8   (N, 3, H, W)
    labels  int64   (N,)
    fields  float32 (N, F)      the demo's .fields vector (23 points x (type, x, y)), F may be 0
    factors float32 (N, K)      ground-truth generative factors (demo only), K may be 0
    factor_names list[str]      names of the K factors
    classes list[str]           label i is classes[i], in training order
    sha256  list[str]           per image, the content hash of its source file
    paths   list[str]           per image, the browsable file it came from

Thousands of loose files make both DVC and a DataLoader slow; one tensor file per
split is fast for both, and the manifest beside it keeps provenance per image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from stages.common.io import atomic_path
from stages.shared.checkpoint import write_torch


@dataclass
class Shard:
    images: torch.Tensor            # (N, 3, H, W) uint8
    labels: torch.Tensor            # (N,) int64
    classes: list[str]
    sha256: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    fields: torch.Tensor | None = None   # (N, F) float32
    factors: torch.Tensor | None = None  # (N, K) float32
    factor_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.images)
        if self.fields is None:
            self.fields = torch.zeros((n, 0), dtype=torch.float32)
        if self.factors is None:
            self.factors = torch.zeros((n, 0), dtype=torch.float32)
        if len(self.labels) != n or len(self.fields) != n:
            raise ValueError(f"shard has {n} images but {len(self.labels)} labels, {len(self.fields)} fields")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "Shard":
        index = torch.as_tensor(index, dtype=torch.long)
        pick = index.tolist()
        return Shard(self.images[index], self.labels[index], list(self.classes),
                     [self.sha256[i] for i in pick] if self.sha256 else [],
                     [self.paths[i] for i in pick] if self.paths else [],
                     self.fields[index], self.factors[index], list(self.factor_names))

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


def save_shard(path: str | Path, shard: Shard) -> None:
    payload = {"images": shard.images.contiguous(), "labels": shard.labels, "fields": shard.fields,
               "factors": shard.factors, "factor_names": list(shard.factor_names),
               "classes": list(shard.classes), "sha256": list(shard.sha256), "paths": list(shard.paths)}
    with atomic_path(path) as tmp:
        write_torch(tmp, payload)


def load_shard(path: str | Path) -> Shard:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(f"{path}: not a readable kiln shard ({err.__class__.__name__})") from err
    return Shard(**payload)


def iterate_batches(shard: Shard, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None, drop_last: bool = False,
                    rank: int = 0, world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (images uint8 (B,3,H,W), labels (B,), fields (B,F)) straight from memory.

    Rank ``rank`` of ``world`` takes every world-th sample of the (seeded) order, as the
    image store's ``load_batches`` does: every rank draws the same permutation, and with
    per-rank batches of B / world the ranks' k-th batches together are one process's k-th
    batch of B. Shuffled (training), the last ``n % world`` are left out, so ranks step in
    lockstep; in order (evaluation), every sample goes to exactly one rank."""
    order = torch.randperm(len(shard), generator=generator) if shuffle else torch.arange(len(shard))
    if world > 1:
        order = order[:len(order) - len(order) % world] if shuffle else order
        order = order[rank::world]
    n = len(order)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield shard.images[idx], shard.labels[idx], shard.fields[idx]
