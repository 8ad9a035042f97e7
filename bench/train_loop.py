"""Training-loop throughput: kiln's shard loop against a plain ImageFolder + DataLoader loop.

Same model (the classifier from params.yaml), batch size, images and online
augmentation ops (flip + random resized crop). The plain loop is fp32; kiln's loop
runs as train@classifier does (channels_last, ``train.classifier.precision``), and is
also timed in fp32 so the two effects can be told apart.

    python bench/train_loop.py [--shard data/augmented/train.pt] [--steps 40] [--workers 2]

Needs the training shard (`dvc repro augment`). Prints images/s for each loop and the ratio.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stages.shared.augment_ops import batch_augment  # noqa: E402
from stages.families.classifier.core import build_model, make_preprocess  # noqa: E402
from stages.shared.runtime import autocast  # noqa: E402
from stages.families import load_family_params  # noqa: E402
from stages.shared.pictures import to_pil  # noqa: E402
from stages.shared.shards import iterate_batches, load_shard  # noqa: E402
from stages.shared.training import TRAIN_SECTIONS  # noqa: E402


def export_image_folder(shard, root: Path) -> None:
    """The same training images as PNG files in class folders, as a user would have them."""
    for i, (image, label) in enumerate(zip(shard.images, shard.labels)):
        folder = root / shard.classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        to_pil(image).save(folder / f"{i:06d}.png")


def step(model, optimizer, x, y, precision):
    with autocast(precision, x.device):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def time_steps(batches, model, optimizer, steps: int, precision: str, warmup: int = 3) -> float:
    """Images per second over ``steps`` batches after ``warmup`` untimed ones."""
    seen, start = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            start, seen = time.perf_counter(), 0
        step(model, optimizer, x, y, precision)
        seen += len(y)
        if i + 1 == warmup + steps:
            break
    return seen / (time.perf_counter() - start)


def kiln_batches(shard, params, batch_size, device):
    generator = torch.Generator().manual_seed(0)
    preprocess = make_preprocess(device)
    while True:
        for images, labels, _ in iterate_batches(shard, batch_size, shuffle=True, generator=generator,
                                                 drop_last=True):
            images = batch_augment(images.to(device), params.augment.online, generator)
            yield preprocess(images), labels.to(device)


def folder_batches(root, params, batch_size, workers, device):
    ops, size = params.augment.online, params.base.image_size
    transform = v2.Compose([
        v2.PILToTensor(),
        v2.RandomApply([v2.RandomResizedCrop(size, scale=tuple(ops.crop.scale), antialias=True)], p=ops.crop.p),
        v2.RandomHorizontalFlip(ops.hflip.p),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.5] * 3, [0.5] * 3),
    ])
    loader = DataLoader(datasets.ImageFolder(str(root), transform=transform), batch_size=batch_size,
                        shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    while True:
        for x, y in loader:
            yield x.to(device), y.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", type=Path, default=Path("data/augmented/train.pt"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_family_params(args.params, "classifier", ("train",), TRAIN_SECTIONS)
    cfg = params.train["classifier"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shard = load_shard(args.shard)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_image_folder(shard, Path(tmp))
        runs = (("imagefolder", "fp32", folder_batches(Path(tmp), params, cfg.batch_size, args.workers, device)),
                ("kiln-fp32", "fp32", kiln_batches(shard, params, cfg.batch_size, device)),
                ("kiln", cfg.precision, kiln_batches(shard, params, cfg.batch_size, device)))
        for name, precision, batches in runs:
            torch.manual_seed(0)
            model = build_model(cfg, len(shard.classes)).to(device)
            if name.startswith("kiln"):
                model = model.to(memory_format=torch.channels_last)
            optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            model.train()
            results[name] = time_steps(batches, model, optimizer, args.steps, precision)
            print(f"{name:12s} {results[name]:8.1f} images/s ({precision})")
    print(f"ratio kiln / imagefolder: {results['kiln'] / results['imagefolder']:.2f}x "
          f"(fp32 only: {results['kiln-fp32'] / results['imagefolder']:.2f}x; batch {cfg.batch_size}, "
          f"{args.steps} steps, {torch.get_num_threads()} threads, {device})")


if __name__ == "__main__":
    main()
