"""augment: offline augmentation of the training shard to N images per class.

    python -m stages.augment --input data/split/train.pt --out data/augmented --preview metrics/augment

The same ops (the decathlon DataAugmentor's: elastic distortion, flips, random
resized crop, random erasing, rotation; then resize) build the online preset
that train applies per batch (``train_preset``). Writes a preview grid PNG:
each column an original, below it augmented versions.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from stages.augment.config import Augment
from stages.common.errors import StageError, run_stage
from stages.common.io import atomic_dir
from stages.common.params import Base, load_params
from stages.shared.augment_ops import AugmentOps
from stages.shared.pictures import image_grid, save_png
from stages.shared.rebalance import resample
from stages.shared.shards import Shard, load_shard, save_shard

PREVIEW_ROWS = 5  # augmented versions shown under each original


def train_preset(*, ops: AugmentOps, size: int) -> v2.Transform | None:
    """Per-image transform for uint8 (3,H,W) tensors; None when every op is off."""
    steps = []
    if ops.elastic.p > 0:
        steps.append(v2.RandomApply([v2.ElasticTransform(alpha=ops.elastic.alpha, sigma=ops.elastic.sigma)],
                                    p=ops.elastic.p))
    if ops.crop.p > 0:
        crop = v2.RandomResizedCrop(size, scale=tuple(ops.crop.scale), ratio=tuple(ops.crop.ratio), antialias=True)
        steps.append(v2.RandomApply([crop], p=ops.crop.p))
    if ops.rotation.p > 0:
        steps.append(v2.RandomApply([v2.RandomRotation(ops.rotation.degrees)], p=ops.rotation.p))
    if ops.hflip.p > 0:
        steps.append(v2.RandomHorizontalFlip(ops.hflip.p))
    if ops.vflip.p > 0:
        steps.append(v2.RandomVerticalFlip(ops.vflip.p))
    if ops.erasing.p > 0:
        steps.append(v2.RandomErasing(p=ops.erasing.p, scale=tuple(ops.erasing.scale)))
    if not steps:
        return None
    steps.append(v2.Resize((size, size), antialias=True))  # crops and rotations keep the size fixed
    return v2.Compose(steps)


def eval_preset(*, size: int) -> v2.Transform:
    """What evaluate and classify apply: only bring the image to the training size."""
    return v2.Resize((size, size), antialias=True)


def apply_each(transform: v2.Transform | None, images: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to each image of a uint8 (B,3,H,W) batch with its own random draw."""
    if transform is None:
        return images
    return torch.stack([transform(img) for img in images])


def grow_to(shard: Shard, per_class: int, transform: v2.Transform | None) -> tuple[Shard, int]:
    """Add augmented copies until every class has ``per_class`` images; originals are kept."""
    rng = np.random.default_rng(int(torch.initial_seed()) % (2**32))
    labels = shard.labels.numpy()
    sources = []
    for cls in range(len(shard.classes)):
        idx = np.flatnonzero(labels == cls)
        missing = per_class - len(idx)
        if missing > 0 and len(idx) > 0:
            sources.append(resample(idx, missing, rng))  # cycles: each original used evenly
    if not sources or transform is None:
        return shard, 0
    source_idx = torch.as_tensor(np.concatenate(sources))
    extra = shard.subset(source_idx)
    extra.images = apply_each(transform, extra.images)
    extra.paths = [f"{p}#aug{i}" for i, p in enumerate(extra.paths)]
    merged = Shard(torch.cat([shard.images, extra.images]), torch.cat([shard.labels, extra.labels]),
                   shard.classes, shard.sha256 + extra.sha256, shard.paths + extra.paths,
                   torch.cat([shard.fields, extra.fields]), torch.cat([shard.factors, extra.factors]),
                   shard.factor_names)
    return merged, len(extra)


def preview(shard: Shard, transform: v2.Transform | None, count: int) -> "Image.Image":
    """Grid: first row originals (spread over classes), then PREVIEW_ROWS augmented rows."""
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(shard), generator=g)[:count]
    originals = shard.images[pick]
    rows = [originals] + [apply_each(transform, originals) for _ in range(PREVIEW_ROWS)]
    captions = [shard.classes[int(shard.labels[i])] for i in pick] + [""] * (count * PREVIEW_ROWS)
    titles = ["original"] + [f"augmented {k + 1}" for k in range(PREVIEW_ROWS)]
    return image_grid(list(torch.cat(rows)), count, captions=captions, row_titles=titles)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln augment", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="training shard from split")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preview", type=Path, required=True, help="directory for preview PNGs")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    params = load_params(args.params, {"base": Base, "augment": Augment})
    cfg, size = params.augment, params.base.image_size
    if not args.input.is_file():
        raise StageError(f"{args.input}: missing training shard (run split first)")
    try:
        shard = load_shard(args.input)
    except ValueError as err:
        raise StageError(str(err)) from err
    start = time.perf_counter()
    torch.manual_seed(params.base.seed)
    transform = train_preset(ops=cfg.offline, size=size)
    grown, added = grow_to(shard, cfg.per_class, transform) if cfg.per_class else (shard, 0)
    with atomic_dir(args.out) as tmp:
        save_shard(tmp / "train.pt", grown)
    save_png(preview(shard, transform, min(cfg.preview, len(shard))), args.preview / "preview.png")
    counts = dict(zip(grown.classes, grown.class_counts()))
    print(f"augment: {len(shard)} -> {len(grown)} training images (+{added} augmented), per class {counts}; "
          f"preview {args.preview / 'preview.png'}; {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    run_stage(main)
