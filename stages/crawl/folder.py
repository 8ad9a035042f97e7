"""engine: folder -> the searches of an existing tree of images, one per class directory.

``<folder>/<class>/*`` is one search per class. A tree that comes with its own splits,
``<folder>/train/<class>/*`` plus optionally ``val/`` (or ``validation/``, the Keras name)
and ``test/``, is one search per split and class, and every row it yields records its
``split``. Those searches run most protected split first (test, val, train): the crawl
keeps the first copy of identical bytes, so a copy of a test image never lands in train.
"""
from __future__ import annotations

from pathlib import Path

from stages.common.errors import StageError

SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
PRIORITY = ("test", "val", "train")   # which split keeps a copy found in several


def split_trees(root: Path, classes: list[str]) -> dict[str | None, Path]:
    """{split: its tree} when ``root`` has split folders, else {None: root}."""
    if not root.is_dir():
        raise StageError(f"crawl.folder: {root} is not a directory")
    names = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    found = {name for name in names if name in SPLIT_DIRS and name not in classes}
    if not found:
        return {None: root}
    if "train" not in found:
        raise StageError(f"crawl.folder: {root} has {sorted(found)[0]}/ but no train/ "
                         "(split folders: train/, optional val/ or validation/, test/)")
    if {"val", "validation"} <= found:
        raise StageError(f"crawl.folder: {root} has both val/ and validation/; keep one")
    unknown = sorted(names - found)
    if unknown:
        raise StageError(f"crawl.folder: {root / unknown[0]} is not a split folder "
                         "(beside train/: val/ or validation/, test/)")
    ordered = sorted(found, key=lambda name: PRIORITY.index(SPLIT_DIRS[name]))
    return {SPLIT_DIRS[name]: root / name for name in ordered}


def folder_searches(root: Path, classes: list[str]) -> list[dict]:
    """One journal search record per (split,) class directory: its files, sorted."""
    records = []
    for split, tree in split_trees(root, classes).items():
        for cls in classes:
            directory = tree / cls
            if not directory.is_dir():
                raise StageError(f"crawl.folder: {directory} is not a directory (one per class expected)")
            files = sorted(p.as_posix() for p in directory.iterdir() if p.is_file())
            record = {"kind": "search", "term": "", "class": cls, "missing": 0, "error": None,
                      "page_url": directory.as_posix(), "urls": files}
            if split is not None:
                record["split"] = split
            records.append(record)
    return records
