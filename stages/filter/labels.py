"""Where the ensemble's keep/reject labels come from.

Three sources, in rising priority when they label the same image (same sha256)
(``for_class`` then turns other classes' rows into rejects for a per-class filter):
- weak labels from the crawl: a row found by one of its class's own terms is a
  keep, a row found by a configured negative term is a reject;
- the demo's ground truth (``data/demo/index.jsonl``), standing in for hand
  labels: each item's kind (pot | distractor | junk) and junk type are mapped to
  keep/reject by ``labels.demo.keep`` / ``labels.demo.reject``;
- a folder a person curates: ``<folder>/keep/*`` and ``<folder>/reject/*``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np

from stages.common.errors import StageError
from stages.common.io import read_jsonl, sha256_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
SOURCE_PRIORITY = {"weak": 0, "demo": 1, "folder": 2}


@dataclass
class Example:
    path: str           # image file
    keep: int           # 1 keep, 0 reject
    source: str         # weak | demo | folder
    row: int | None     # index into the raw manifest, None for folder images not crawled


def load_truth(path: Path) -> list[dict]:
    try:
        return read_jsonl(path)
    except FileNotFoundError as err:
        raise StageError(f"{path}: demo ground truth not found") from err
    except ValueError as err:
        raise StageError(str(err)) from err


def _url_name(url: str | None) -> str | None:
    return PurePosixPath(urlparse(url).path).name or None if url else None


def join_truth(rows: list[dict], truth: list[dict]) -> list[dict | None]:
    """Ground-truth item per manifest row, joined on sha256 (for scoring and demo labels).

    Identical bytes served twice (an exact duplicate) give one sha256 several truth
    rows: they are handed out in order, non-junk first, so the first crawled copy
    counts as the original and later copies as the duplicates. A row whose bytes the
    crawler re-encoded (e.g. a greyscale PNG stored as RGB) has a new sha256; it is
    joined by the file name in its ``source_url`` / ``final_url`` instead.
    """
    by_sha: dict[str, list[dict]] = {}
    for item in sorted(truth, key=lambda t: t.get("kind") == "junk"):
        by_sha.setdefault(item["sha256"], []).append(item)
    by_name = {PurePosixPath(item.get("file", "")).name: item for item in truth if item.get("file")}
    joined = []
    for row in rows:
        queue = by_sha.get(row.get("sha256"), [])
        item = queue.pop(0) if len(queue) > 1 else (queue[0] if queue else None)
        if item is None:
            names = [_url_name(row.get(key)) for key in ("final_url", "source_url")]
            item = next((by_name[n] for n in names if n in by_name), None)
        joined.append(item)
    return joined


def truth_names(item: dict | None) -> set[str]:
    """The names a demo label list can refer to: the kind and the junk type."""
    if item is None:
        return set()
    return {item.get("kind"), item.get("junk")} - {None}


def demo_examples(rows: list[dict], joined: list[dict | None], demo_cfg) -> list[Example]:
    out = []
    for i, item in enumerate(joined):
        names = truth_names(item)
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


def gather_examples(rows: list[dict], joined: list[dict | None] | None, labels_cfg) -> list[Example]:
    """All labelled examples of one filter; an image labelled twice keeps its best source's label."""
    candidates: list[Example] = []
    if labels_cfg.weak:
        candidates += weak_examples(rows, labels_cfg.negative_terms)
    if joined is not None and (labels_cfg.demo.keep or labels_cfg.demo.reject):
        candidates += demo_examples(rows, joined, labels_cfg.demo)
    if labels_cfg.folder:
        candidates += folder_examples(Path(labels_cfg.folder), rows)
    best: dict[object, Example] = {}
    for ex in candidates:
        key = ("row", ex.row) if ex.row is not None else ("file", ex.path)
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
