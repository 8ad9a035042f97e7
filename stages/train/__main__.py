"""train@<family>: python -m stages.train <family> --train T.pt --val V.pt --store DIR --models DIR --metrics DIR.

Resolves the family from the registry and hands it a TrainContext. A family
checkpoints to ``resume_path`` every epoch (atomically); a rerun after a kill
resumes from it only when its fingerprint (family config, base params, data
hashes) matches, so a changed learning rate never continues a stale run.

The shards are what bnconv and the generative families train on; a classifier backbone
reads the full-resolution image store (``--store``, the split stage's data/split/full).

``train.<family>.nproc`` > 1 (a family whose train package sets ``DISTRIBUTED``): the stage
replaces itself with torchrun running this same command on N processes
(stages/shared/distributed.py); rank 0 prepares the staging folder, writes every
checkpoint and publishes the model; the others train their share of each batch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stages.common.errors import StageError, run_stage
from stages.common.io import sha256_file
from stages.common.schema import to_dict
from stages.families import family_module, load_family_params
from stages.shared.distributed import (
    SINGLE,
    World,
    barrier,
    init_world,
    relaunch,
    shutdown,
    under_torchrun,
)
from stages.shared.runtime import pick_device, seed_everything, set_threads
from stages.shared.training import RESUME_DIR, TRAIN_SECTIONS

STAGING_DIR = Path(".kiln/staging")


@dataclass
class TrainContext:
    params: Any              # base, families, train.<family>, augment.online, split.class_weights
    family: str
    cfg: Any                 # the family's train config dataclass
    train_shard: Path        # (N,3,H,W) uint8 training images (augmented)
    val_shard: Path
    model_dir: Path          # final checkpoint(s): model_dir / "model.pt"
    metrics_dir: Path        # dvclive directory
    resume_path: Path        # last-epoch checkpoint, outside DVC outputs
    device: torch.device
    fingerprint: str
    extra_inputs: dict[str, Path]  # family-specific inputs named on the command line
    store_dir: Path = Path("data/split/full")   # image store: train/val at full resolution
    world: World = SINGLE    # data-parallel rank and size (torchrun); rank 0 alone writes

    @property
    def checkpoint_path(self) -> Path:
        return self.model_dir / "model.pt"


def fingerprint(params: Any, family: str, cfg: Any, inputs: list[Path]) -> str:
    """What a resumed run must share with the killed one: config and input data."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"base": to_dict(params.base), "cfg": to_dict(cfg), "family": family},
                             sort_keys=True).encode())
    for path in inputs:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()[:16]


def staging_dir(family: str, resume_path: Path) -> Path:
    """Where training writes its checkpoints: under .kiln/, never the output itself, so a
    kill leaves models/<family> as DVC last recorded it (or absent, for dvc checkout to
    restore), never a half-trained best epoch. A run that will resume keeps what it staged."""
    staging = STAGING_DIR / family
    if not resume_path.exists():
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def publish(staging: Path, target: Path) -> None:
    """Move the finished model folder into place in two renames (same file system)."""
    if not (staging / "model.pt").is_file():
        raise StageError(f"train: no checkpoint was written to {staging}")
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln train", description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--train", type=Path, required=True, help="training shard (.pt)")
    parser.add_argument("--val", type=Path, required=True, help="validation shard (.pt)")
    parser.add_argument("--store", type=Path, default=Path("data/split/full"),
                        help="image store (train/val) a classifier backbone trains on")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train"))
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                        help="extra family input, e.g. best_params=metrics/hpo/classifier/best.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def _extra_inputs(pairs: list[str]) -> dict[str, Path]:
    extra = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep:
            raise StageError(f"--input {pair!r}: expected NAME=PATH")
        extra[name] = Path(path)
    return extra


def store_indexes(cfg: Any, store: Path) -> list[Path]:
    """The store's index files when this config reads the store (they list every image's
    sha256): part of the fingerprint, so a new store never resumes a stale run."""
    if getattr(cfg, "arch", "bnconv") == "bnconv":
        return []
    return [p for p in (store / "train.json", store / "val.json") if p.is_file()]


def _launch_ranks(family: str, cfg: Any, argv: list[str]) -> None:
    """Re-launch through torchrun when the config asks for several processes and this is
    not a torchrun worker already (then it never returns)."""
    nproc = getattr(cfg, "nproc", 1)
    if nproc > 1 and not under_torchrun():
        if not getattr(family_module(family, "train"), "DISTRIBUTED", False):
            raise StageError(f"train@{family}: nproc {nproc}, but this family trains in one process only")
        relaunch(nproc, "stages.train", argv)


def _context(args, params, cfg, world: World, device: torch.device) -> TrainContext:
    extra = _extra_inputs(args.input)
    resume_path = RESUME_DIR / f"{args.family}.pt"
    inputs = [args.train, args.val, *store_indexes(cfg, args.store), *[p for p in extra.values() if p.is_file()]]
    # rank 0 alone reads and writes the resume file, so it alone hashes the inputs; the
    # others never write into the staging folder, so only rank 0 clears it
    return TrainContext(
        params=params, family=args.family, cfg=cfg, train_shard=args.train, val_shard=args.val,
        model_dir=staging_dir(args.family, resume_path) if world.main else STAGING_DIR / args.family,
        metrics_dir=args.metrics / args.family, resume_path=resume_path, device=device,
        fingerprint=fingerprint(params, args.family, cfg, inputs) if world.main else "",
        extra_inputs=extra, store_dir=args.store, world=world)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    params = load_family_params(args.params, args.family, ("train",), TRAIN_SECTIONS)
    for path in (args.train, args.val):
        if not path.is_file():
            raise StageError(f"{path}: missing input shard (run the split/augment stages first)")
    cfg = params.train[args.family]
    _launch_ranks(args.family, cfg, argv)
    world, device = init_world(pick_device(params.base.device))
    if world.distributed and not getattr(family_module(args.family, "train"), "DISTRIBUTED", False):
        raise StageError(f"train@{args.family}: this family trains in one process only; run it without torchrun")
    set_threads(params.base.threads)
    seed_everything(params.base.seed)
    ctx = _context(args, params, cfg, world, device)
    start = time.perf_counter()
    family_module(args.family, "train").train(ctx)
    barrier(world)   # every rank done before rank 0 moves the model into place
    if world.main:
        publish(ctx.model_dir, args.models / args.family)
        print(f"train@{args.family}: done in {time.perf_counter() - start:.1f}s on {ctx.device}"
              f"{f' x {world.size} processes' if world.distributed else ''}; "
              f"checkpoint {args.models / args.family / 'model.pt'}")
    shutdown(world)


if __name__ == "__main__":
    run_stage(main)
