"""split: seeded, stratified train/val/test shards from a dataset manifest.

    python -m stages.split --input data/filtered/manifest.jsonl --out data/split

Images that are copies of each other (same sha256, or near duplicates when the
manifest carries perceptual hashes) form one group, and a group never straddles
two splits. The training split is then rebalanced (split.rebalance) and every
split is decoded once into a uint8 shard at base.image_size.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from stages.common.errors import StageError, run_stage
from stages.common.io import atomic_dir, write_json, write_jsonl
from stages.common.params import Base, load_params
from stages.shared import manifest
from stages.shared.images import load_images
from stages.shared.neardup import group_near_duplicates
from stages.shared.rebalance import balanced_class_weights, rebalance
from stages.shared.shards import Shard, save_shard
from stages.split.config import Split

SPLITS = ("train", "val", "test")


def read_manifest(path: Path, classes: list[str]) -> tuple[list[dict], int]:
    """Rows whose class is in ``classes``; also how many rows were left out."""
    rows = manifest.read_manifest(path, "the filter stage")
    kept = [r for r in rows if r["class"] in classes]
    empty = [c for c in classes if not any(r["class"] == c for r in kept)]
    if empty:
        raise StageError(f"{path}: no images of class {empty[0]!r} (base.classes names it)")
    return kept, len(rows) - len(kept)


def group_ids(rows: list[dict], max_distance: int) -> np.ndarray:
    """Group id per row: byte-identical copies, and near duplicates (perceptual hashes within
    ``max_distance`` bits, transitively) when it is >= 0, always share a split."""
    if max_distance >= 0:

        return np.array(group_near_duplicates(rows, max_distance), dtype=np.int64)
    first_seen: dict[str, int] = {}
    return np.array([first_seen.setdefault(r["sha256"], len(first_seen)) for r in rows])


def assign_splits(labels: np.ndarray, groups: np.ndarray, fractions: dict[str, float],
                  rng: np.random.Generator) -> np.ndarray:
    """Per class, shuffle its groups and fill train, then val, then test by image count."""
    assignment = np.empty(len(labels), dtype=object)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        by_group = defaultdict(list)
        for i in members:
            by_group[groups[i]].append(i)
        order = rng.permutation(sorted(by_group))
        n = len(members)
        bounds = np.cumsum([fractions["train"] * n, fractions["val"] * n])
        filled = 0
        for g in order:
            name = "train" if filled < bounds[0] else "val" if filled < bounds[1] else "test"
            assignment[by_group[g]] = name
            filled += len(by_group[g])
    return assignment


def build_shard(rows: list[dict], images: torch.Tensor, classes: list[str]) -> Shard:
    labels = torch.tensor([classes.index(r["class"]) for r in rows], dtype=torch.long)
    fields = [r.get("fields") or [] for r in rows]
    width = max((len(f) for f in fields), default=0)
    fields_t = torch.tensor([f if len(f) == width else [0.0] * width for f in fields], dtype=torch.float32)
    names = sorted({k for r in rows for k in (r.get("factors") or {})})
    factors = torch.tensor([[float((r.get("factors") or {}).get(k, np.nan)) for k in names] for r in rows],
                           dtype=torch.float32).reshape(len(rows), len(names))
    return Shard(images, labels, list(classes), [r["sha256"] for r in rows], [r["path"] for r in rows],
                 fields_t.reshape(len(rows), width), factors, names)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln split", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="dataset manifest (.jsonl)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    params = load_params(args.params, {"base": Base, "split": Split})
    start = time.perf_counter()
    classes = params.base.classes
    rows, left_out = read_manifest(args.input, classes)
    rng = np.random.default_rng(params.base.seed)
    labels = np.array([classes.index(r["class"]) for r in rows])
    images = load_images([r["path"] for r in rows], params.base.image_size)  # first: names any undecodable file
    groups = group_ids(rows, params.split.near_duplicates)
    fractions = vars(params.split.fractions)
    assignment = assign_splits(labels, groups, fractions, rng)
    full = build_shard(rows, images, classes)
    cfg = params.split
    shards = {name: full.subset(np.flatnonzero(assignment == name)) for name in SPLITS}
    train_labels = shards["train"].labels.numpy()
    keep = rebalance(train_labels, len(classes), cfg.rebalance.mode, rng,
                     fraction=cfg.rebalance.fraction, count=cfg.rebalance.count)
    summary = {
        "images": len(rows), "left_out_other_classes": left_out,
        "groups": int(len(np.unique(groups))), "merged_into_groups": int(len(rows) - len(np.unique(groups))),
        "counts": {name: dict(zip(classes, s.class_counts())) for name, s in shards.items()},
        "class_weights": dict(zip(classes, balanced_class_weights(train_labels, len(classes))))
        if cfg.class_weights == "balanced" else None,
    }
    shards["train"] = shards["train"].subset(keep)
    summary["counts"]["train_rebalanced"] = dict(zip(classes, shards["train"].class_counts()))
    with atomic_dir(args.out) as tmp:
        for name, shard in shards.items():
            save_shard(tmp / f"{name}.pt", shard)
        write_jsonl(tmp / "manifest.jsonl", [
            {**{k: r.get(k) for k in ("path", "sha256", "class", "fields", "factors")},
             "split": str(s), "group": int(g)} for r, s, g in zip(rows, assignment, groups)])
        write_json(tmp / "summary.json", summary)
    counts = Counter(assignment.tolist())
    print(f"split: {len(rows)} images -> train {counts['train']} (rebalanced {len(shards['train'])}), "
          f"val {counts['val']}, test {counts['test']}; {summary['merged_into_groups']} merged into groups; "
          f"{time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    run_stage(main)
