"""Where the classifier's batches come from: the 64-px shards or the full-resolution store.

bnconv (and hpo trials) train on the in-memory uint8 shards with the online augmentation
ops. A backbone trains on the image store at its own input size: RandomResizedCrop + flip
views of the stored photos for training, the eval view (shorter side to size / 0.875,
centre crop) otherwise, decoded a batch at a time so a split of 224-px images is never
held in memory. Both expose the same three things to the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import torch

from stages.shared.augment_ops import AugmentOps, batch_augment
from stages.shared.shards import Shard, iterate_batches
from stages.shared.store import EVAL_CROP_RATIO, Store, load_batches

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]   # uint8 (B,3,H,W), int64 (B,)


class Source(Protocol):
    classes: list[str]

    def __len__(self) -> int: ...
    @property
    def labels(self) -> torch.Tensor: ...
    def train_batches(self, epoch: int, batch_size: int, generator: torch.Generator) -> Batches: ...
    def eval_batches(self, batch_size: int) -> Batches: ...


@dataclass
class ShardSource:
    shard: Shard
    online: AugmentOps | None = None   # augment.online; None: no augmentation
    device: torch.device | str = "cpu"  # augmentation runs where the model does

    @property
    def classes(self) -> list[str]:
        return self.shard.classes

    @property
    def labels(self) -> torch.Tensor:
        return self.shard.labels

    def __len__(self) -> int:
        return len(self.shard)

    def train_batches(self, epoch: int, batch_size: int, generator: torch.Generator) -> Batches:
        # the order of generator draws (permutation, then each batch's augmentation) is what
        # bnconv always drew: the demo's figures do not move
        for images, labels, _ in iterate_batches(self.shard, batch_size, shuffle=True, generator=generator,
                                                 drop_last=len(self.shard) > batch_size):
            images = images.to(self.device, non_blocking=True)
            yield (batch_augment(images, self.online, generator) if self.online is not None else images), labels

    def eval_batches(self, batch_size: int) -> Batches:
        for images, labels, _ in iterate_batches(self.shard, batch_size, shuffle=False):
            yield images, labels


@dataclass
class StoreSource:
    store: Store
    image_size: int                 # the model's input size: views are cut at it, never resized again
    seed: int = 0                   # base.seed: crops and order are a function of (seed, epoch)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    workers: int = 2                # decoding threads

    @property
    def classes(self) -> list[str]:
        return self.store.classes

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor(self.store.labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.store)

    def train_batches(self, epoch: int, batch_size: int, generator: torch.Generator) -> Batches:
        # deterministic per (seed, epoch), so a resumed run sees the same views without the generator
        return load_batches(self.store, image_size=self.image_size, batch_size=batch_size, train=True,
                            seed=self.seed, epoch=epoch, crop_scale=self.crop_scale, workers=self.workers,
                            drop_last=len(self.store) > batch_size)

    def eval_batches(self, batch_size: int) -> Batches:
        return load_batches(self.store, image_size=self.image_size, batch_size=batch_size, train=False,
                            workers=self.workers)


def as_source(data, online: AugmentOps | None = None, device: torch.device | str = "cpu") -> Source:
    """A Source as is; a Shard wrapped (with ``online`` augmentation for training)."""
    return ShardSource(data, online, device) if isinstance(data, Shard) else data


def eval_preprocess(model) -> dict:
    """What the checkpoint records so classify and serve feed a backbone what evaluate did:
    resize the shorter side to ``resize``, centre-crop ``crop`` (store.eval_image), then the
    model normalises with ``mean``/``std`` itself."""
    return {"resize": round(model.input_size / EVAL_CROP_RATIO), "crop": model.input_size,
            "mean": [float(v) for v in model.mean.flatten()], "std": [float(v) for v in model.std.flatten()]}
