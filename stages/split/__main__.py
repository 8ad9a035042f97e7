"""split: seeded, stratified train/val/test shards from a dataset manifest.

    python -m stages.split --input data/filtered/manifest.jsonl --out data/split

Images that are copies of each other (same sha256, or near duplicates when the
manifest carries perceptual hashes) form one group, and a group never straddles
two splits. A source that already has train/ val/ test/ trees (crawl.engine: folder)
keeps them: its splits are honoured, copies across them stay only in the most protected
split (test, then val), and a split it lacks is carved out of train by split.fractions.
The training split is then rebalanced (split.rebalance); every split is decoded once
into a uint8 shard at base.image_size (the small models) and written full-size to the
image store under full/ (backbones crop it at their own resolution, shared/store.py).
"""
from __future__ import annotations

import argparse
import sys
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
from stages.shared.store import STORE_DIR, write_store
from stages.split.config import Split

SPLITS = ("train", "val", "test")
MIN_EVAL_PER_CLASS = 50   # below this a val/test class cannot show a few-percent change


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


def given_splits(rows: list[dict]) -> np.ndarray | None:
    """The split each row's source put it in (folder train/ val/ test/ trees), or None."""
    given = [r.get("split") for r in rows]
    if not any(given):
        return None
    unknown = sorted({str(s) for s in given if s not in SPLITS})
    if unknown:
        raise StageError(f"manifest rows name split {unknown[0]!r}; expected one of {', '.join(SPLITS)}")
    return np.array(given, dtype=object)


def drop_cross_split_copies(given: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mask of rows to keep: in a group of copies spanning several given splits, only the
    rows of the most protected split stay (test over val over train), so a near duplicate
    of a val or test image never trains and never scores twice."""
    rank = {"train": 0, "val": 1, "test": 2}
    best: dict[int, int] = {}
    for g, s in zip(groups.tolist(), given.tolist()):
        best[g] = max(best.get(g, 0), rank[s])
    return np.array([rank[s] == best[g] for g, s in zip(groups.tolist(), given.tolist())])


def complete_splits(given: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                    fractions: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Keep the given splits; carve a split the source lacks (no val/ or test/ tree) out of
    train by its share of split.fractions, groups kept whole."""
    missing = [name for name in ("val", "test") if name not in set(given.tolist())]
    assignment = given.copy()
    if not missing:
        return assignment
    shares = {"train": fractions["train"], "val": 0.0, "test": 0.0}
    shares.update({name: fractions[name] for name in missing})
    total = sum(shares.values())
    train_rows = np.flatnonzero(given == "train")
    carved = assign_splits(labels[train_rows], groups[train_rows],
                           {k: v / total for k, v in shares.items()}, rng)
    assignment[train_rows] = carved
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


def small_split_warnings(shards: dict[str, Shard], minimum: int = MIN_EVAL_PER_CLASS) -> list[str]:
    """One line per val/test class too small to measure anything (an image moves accuracy 1/n)."""
    lines = []
    for name in ("val", "test"):
        for cls, count in zip(shards[name].classes, shards[name].class_counts()):
            if count < minimum:
                lines.append(f"kiln: warning: split: {name} has {count} images of class {cls!r} (fewer than "
                             f"{minimum}): its accuracy moves in steps of {1 / max(count, 1):.0%} per image")
    return lines


def decide_splits(rows: list[dict], labels: np.ndarray, groups: np.ndarray, cfg: Split,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """(split per row, mask of rows kept, where the splits came from)."""
    given = given_splits(rows)
    if given is None:
        assignment = assign_splits(labels, groups, vars(cfg.fractions), rng)
        return assignment, np.ones(len(rows), dtype=bool), "fractions"
    kept = drop_cross_split_copies(given, groups)
    assignment = np.empty(len(rows), dtype=object)
    assignment[kept] = complete_splits(given[kept], labels[kept], groups[kept], vars(cfg.fractions), rng)
    present = sorted(set(given.tolist()), key=SPLITS.index)
    return assignment, kept, "given: " + ", ".join(present)


def write_outputs(out: Path, shards: dict[str, Shard], manifest_rows: list[dict], summary: dict,
                  store_size: int) -> None:
    """The 64-px shards, the full-resolution store (data/split/full), the manifest, the summary."""
    with atomic_dir(out) as tmp:
        for name, shard in shards.items():
            save_shard(tmp / f"{name}.pt", shard)
            write_store(tmp / STORE_DIR, name, shard.paths, shard.labels.tolist(), shard.classes,
                        shard.sha256, size=store_size)
        write_jsonl(tmp / "manifest.jsonl", manifest_rows)
        write_json(tmp / "summary.json", summary)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln split", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="dataset manifest (.jsonl)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    params = load_params(args.params, {"base": Base, "split": Split})
    start, cfg, classes = time.perf_counter(), params.split, params.base.classes
    rows, left_out = read_manifest(args.input, classes)
    rng = np.random.default_rng(params.base.seed)
    labels = np.array([classes.index(r["class"]) for r in rows])
    images = load_images([r["path"] for r in rows], params.base.image_size)  # first: names any undecodable file
    groups = group_ids(rows, cfg.near_duplicates)
    assignment, kept, source = decide_splits(rows, labels, groups, cfg, rng)
    full = build_shard(rows, images, classes)
    shards = {name: full.subset(np.flatnonzero(assignment == name)) for name in SPLITS}
    train_labels = shards["train"].labels.numpy()
    keep = rebalance(train_labels, len(classes), cfg.rebalance.mode, rng,
                     fraction=cfg.rebalance.fraction, count=cfg.rebalance.count)
    summary = {
        "images": len(rows), "left_out_other_classes": left_out, "splits_from": source,
        "dropped_cross_split_copies": int((~kept).sum()),
        "groups": int(len(np.unique(groups))), "merged_into_groups": int(len(rows) - len(np.unique(groups))),
        "counts": {name: dict(zip(classes, s.class_counts())) for name, s in shards.items()},
        "class_weights": dict(zip(classes, balanced_class_weights(train_labels, len(classes))))
        if cfg.class_weights == "balanced" else None,
    }
    shards["train"] = shards["train"].subset(keep)
    summary["counts"]["train_rebalanced"] = dict(zip(classes, shards["train"].class_counts()))
    manifest_rows = [{**{k: r.get(k) for k in ("path", "sha256", "class", "fields", "factors")},
                      "split": None if s is None else str(s), "group": int(g)}
                     for r, s, g in zip(rows, assignment, groups)]
    write_outputs(args.out, shards, manifest_rows, summary, cfg.store_size)
    for line in small_split_warnings(shards):
        print(line, file=sys.stderr)
    counts = Counter(assignment.tolist())
    print(f"split ({source}): {len(rows)} images -> train {counts['train']} (rebalanced {len(shards['train'])}), "
          f"val {counts['val']}, test {counts['test']}; {summary['merged_into_groups']} merged into groups, "
          f"{summary['dropped_cross_split_copies']} copies across given splits dropped; "
          f"{time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    run_stage(main)
