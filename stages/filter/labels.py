"""Where the ensemble's keep/reject labels come from.

Three sources, in rising priority when they label the same image (same sha256)
(``for_class`` then turns other classes' rows into rejects for a per-class filter):
- weak labels from the crawl: a row found by one of its class's own terms is a
  keep, a row found by a configured negative term is a reject;
- the ground truth a row carries (``truth``: the demo embeds it in every file and the
  crawl reads it back), standing in for hand labels: each item's kind (pot |
  distractor | junk) and junk type are mapped to keep/reject by ``labels.demo.keep`` /
  ``labels.demo.reject``; rows without truth (anything but the demo) get no label here;
- a folder a person curates: ``<folder>/keep/*`` and ``<folder>/reject/*``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.common.errors import StageError
from stages.common.io import sha256_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
SOURCE_PRIORITY = {"weak": 0, "demo": 1, "folder": 2}
CAP_STREAM = 1   # cap_examples' random stream of a filter's seed, apart from holdout_mask's


@dataclass
class Example:
    path: str           # image file
    keep: int           # 1 keep, 0 reject
    source: str         # weak | demo | folder
    row: int | None     # index into the raw manifest, None for folder images not crawled


def truth_names(truth: dict | None) -> set[str]:
    """The names a demo label list can refer to: the kind and the junk type."""
    if truth is None:
        return set()
    return {truth.get("kind"), truth.get("junk")} - {None}


def demo_examples(rows: list[dict], demo_cfg) -> list[Example]:
    out = []
    for i, row in enumerate(rows):
        names = truth_names(row.get("truth"))
        keep, reject = bool(names & set(demo_cfg.keep)), bool(names & set(demo_cfg.reject))
        if keep != reject:   # labelled on exactly one side
            out.append(Example(rows[i]["path"], int(keep), "demo", i))
    return out


def weak_examples(rows: list[dict], negative_terms: list[str]) -> list[Example]:
    negatives = set(negative_terms)
    return [Example(row["path"], int(row.get("term") not in negatives), "weak", i)
            for i, row in enumerate(rows) if row.get("term") is not None]


def folder_examples(folder: Path, rows: list[dict]) -> list[Example]:
    """Images under folder/keep and folder/reject; linked to the crawl row with the same bytes."""
    if not (folder / "keep").is_dir() or not (folder / "reject").is_dir():
        raise StageError(f"{folder}: labelled folder needs keep/ and reject/ subfolders")
    row_of_sha = {row.get("sha256"): i for i, row in enumerate(rows)}
    out = []
    for side, keep in (("keep", 1), ("reject", 0)):
        for path in sorted((folder / side).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                out.append(Example(str(path), keep, "folder", row_of_sha.get(sha256_file(path))))
    return out


def for_class(examples: list[Example], rows: list[dict], cls: str) -> list[Example]:
    """The examples of a per-class filter ("is it a <cls>?"): other classes as negatives.

    A crawled row of ``cls`` keeps its label; a row crawled for another class is a reject
    (a vase is no bowl, whatever it is labelled in its own class). A curated image not in the
    crawl has no class, so only its rejects apply to every class.
    """
    out = []
    for ex in examples:
        if ex.row is None:
            if not ex.keep:
                out.append(ex)
        elif rows[ex.row]["class"] == cls:
            out.append(ex)
        else:
            out.append(Example(ex.path, 0, ex.source, ex.row))
    return out


def example_key(ex: Example) -> tuple:
    """What makes two examples the same image: its crawl row, or its file outside the crawl."""
    return ("row", ex.row) if ex.row is not None else ("file", ex.path)


def gather_examples(rows: list[dict], labels_cfg) -> list[Example]:
    """All labelled examples of one filter; an image labelled twice keeps its best source's label."""
    candidates: list[Example] = []
    if labels_cfg.weak:
        candidates += weak_examples(rows, labels_cfg.negative_terms)
    if labels_cfg.demo.keep or labels_cfg.demo.reject:
        candidates += demo_examples(rows, labels_cfg.demo)
    if labels_cfg.folder:
        candidates += folder_examples(Path(labels_cfg.folder), rows)
    best: dict[object, Example] = {}
    for ex in candidates:
        key = example_key(ex)
        if key not in best or SOURCE_PRIORITY[ex.source] > SOURCE_PRIORITY[best[key].source]:
            best[key] = ex
    return sorted(best.values(), key=lambda e: (e.row is None, e.row if e.row is not None else 0, e.path))


def holdout_mask(examples: list[Example], fraction: float, seed: int) -> np.ndarray:
    """Stratified held-out choice: ``fraction`` of each label, chosen by the seed."""
    labels = np.array([e.keep for e in examples], dtype=np.int64)
    held = np.zeros(len(examples), dtype=bool)
    rng = np.random.default_rng(seed)
    for value in (0, 1):
        members = np.nonzero(labels == value)[0]
        n_held = int(round(fraction * len(members)))
        held[rng.permutation(members)[:n_held]] = True
    return held


def cap_examples(examples: list[Example], cap: int, seed: int) -> list[Example]:
    """At most ``cap`` examples (0: no cap), in their given order: a seeded sample that keeps
    each label's share (stratified; a label present keeps at least one example). Drawn from
    its own stream of ``seed`` (not the holdout's)."""
    if cap == 0 or len(examples) <= cap:
        return examples
    labels = np.array([e.keep for e in examples], dtype=np.int64)
    n_keep, n_reject = int(labels.sum()), int(len(labels) - labels.sum())
    quota_keep = int(round(cap * n_keep / len(labels)))
    quota_keep = min(max(quota_keep, min(n_keep, 1), cap - n_reject), n_keep, cap - min(n_reject, 1))
    rng = np.random.default_rng([seed, CAP_STREAM])
    chosen = [rng.choice(np.nonzero(labels == value)[0], size=quota, replace=False)
              for value, quota in ((1, quota_keep), (0, cap - quota_keep))]
    return [examples[i] for i in np.sort(np.concatenate(chosen))]
