"""Where the classifier's batches come from: the 64-px shards or the full-resolution store.

bnconv (and hpo trials) train on the in-memory uint8 shards with the online augmentation
ops. A backbone trains on the image store at its own input size: RandomResizedCrop + flip
views of the stored photos for training, the eval view (shorter side to size / 0.875,
centre crop) otherwise, decoded a batch at a time so a split of 224-px images is never
held in memory. Both expose the same three things to the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Protocol

import torch

from stages.families.classifier.core.preset import eval_view_preset
from stages.shared.augment_ops import AugmentOps, batch_augment
from stages.shared.shards import Shard, iterate_batches
from stages.shared.store import Store, load_batches

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
    rank: int = 0                       # data-parallel: this process reads every world-th sample
    world: int = 1

    @property
    def classes(self) -> list[str]:
        return self.shard.classes

    @property
    def labels(self) -> torch.Tensor:
        return self.shard.labels

    def __len__(self) -> int:
        return len(self.shard)

    def train_batches(self, epoch: int, batch_size: int, generator: torch.Generator) -> Batches:
        # one process: the order of generator draws (permutation, then each batch's
        # augmentation) is what bnconv always drew, so the demo's figures do not move
        augment_with = generator if self.world == 1 else _rank_generator(generator, self.rank)
        for images, labels, _ in iterate_batches(self.shard, batch_size, shuffle=True, generator=generator,
                                                 drop_last=len(self) // self.world > batch_size,
                                                 rank=self.rank, world=self.world):
            images = images.to(self.device, non_blocking=True)
            yield (batch_augment(images, self.online, augment_with) if self.online is not None else images), labels

    def eval_batches(self, batch_size: int) -> Batches:
        for images, labels, _ in iterate_batches(self.shard, batch_size, shuffle=False,
                                                 rank=self.rank, world=self.world):
            yield images, labels


def _rank_generator(shared: torch.Generator, rank: int) -> torch.Generator:
    """One rank's augmentation draws, seeded by one draw from the shared generator (the same
    on every rank, so the shared stream, the data order, stays in lockstep) plus the rank:
    ranks augment differently, and a resumed run (shared generator restored) repeats them."""
    seed = int(torch.randint(2**62, (1,), generator=shared))
    return torch.Generator().manual_seed(seed + rank)


@dataclass
class StoreSource:
    store: Store
    image_size: int                 # the model's input size: views are cut at it, never resized again
    seed: int = 0                   # base.seed: crops and order are a function of (seed, epoch)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    workers: int = 2                # decoding threads
    rank: int = 0                   # data-parallel: this process reads every world-th sample
    world: int = 1

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
                            drop_last=len(self) // self.world > batch_size, rank=self.rank, world=self.world)

    def eval_batches(self, batch_size: int) -> Batches:
        return load_batches(self.store, image_size=self.image_size, batch_size=batch_size, train=False,
                            workers=self.workers, rank=self.rank, world=self.world)


def as_source(data, online: AugmentOps | None = None, device: torch.device | str = "cpu") -> Source:
    """A Source as is; a Shard wrapped (with ``online`` augmentation for training)."""
    return ShardSource(data, online, device) if isinstance(data, Shard) else data


def for_rank(source: Source, rank: int, world: int) -> Source:
    """``source`` as rank ``rank`` of ``world`` reads it: its share of every epoch's order
    and of the eval batches. (``labels`` and ``len`` still describe the whole split.)"""
    return source if world == 1 else replace(source, rank=rank, world=world)


def eval_preprocess(model) -> dict:
    """What the checkpoint records so classify, serve and export feed a backbone what evaluate
    did: the preset (core/preset.py) that reads it back. Resize the shorter side to ``resize``,
    centre-crop ``crop`` (store.eval_image), then the model normalises with ``mean``/``std`` itself."""
    return eval_view_preset(model.input_size, [float(v) for v in model.mean.flatten()],
                            [float(v) for v in model.std.flatten()]).record()
