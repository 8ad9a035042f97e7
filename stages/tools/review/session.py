"""One review: the crawl, the filter it feeds, the labels folder, and what the page asks of them.

Everything here answers in plain data (dicts of str, numbers, lists); the HTTP routes in
router.py only translate. Bad requests raise ``ReviewError`` with the status to answer.
"""
from __future__ import annotations

import json
from pathlib import Path

from stages.common.errors import StageError
from stages.common.io import read_jsonl
from stages.filter.ensemble import FILTER_PREFIX
from stages.shared.manifest import read_manifest
from stages.shared.packs import read_bytes
from stages.shared.runtime import pick_device
from stages.tools.review.decisions import (
    SHA256,
    CrawledImage,
    LabelFolder,
    ReviewError,
    inside,
)
from stages.tools.review.queue import queue_item, review_order
from stages.tools.review.scores import ScoreCache
from stages.tools.review.target import choose_target, retrain_hint

HELD_OUT_KEYS = ("precision", "recall", "f1", "keep_recall", "n", "n_reject")


def first_row_per_image(rows: list[dict]) -> list[dict]:
    """The crawl keeps one file per sha256; should a manifest list one twice, the first row stands."""
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(row["sha256"], row)
    return list(first.values())


def review_device(choice: str):
    try:
        return pick_device(choice)
    except RuntimeError:      # cuda asked for, none there
        raise StageError(f"--device {choice}: no CUDA device is available (use auto or cpu)") from None


class ReviewSession:
    """Paths are relative to ``repo_root`` (where dvc.yaml runs the stages); the labels folder's
    files are indexed once here, the filter's scores on first use (``ScoreCache``)."""

    def __init__(self, repo_root: str | Path, params_path: str | Path = "params.yaml", *,
                 filter_name: str | None = None, folder: str | Path | None = None,
                 raw_manifest: str | Path = "data/raw/manifest.jsonl", models: str | Path = "models/filter",
                 metrics: str | Path = "metrics/filter.json",
                 rejected: str | Path = "data/filtered/rejected.jsonl", device: str = "auto"):
        self.root = Path(repo_root).absolute()
        self.target = choose_target(Path(params_path), self.root, filter_name, folder)
        manifest = self.root / raw_manifest
        self.rows = first_row_per_image(read_manifest(manifest, "`dvc repro crawl`"))
        self.crawl_dir = manifest.parent
        self.index_of = {row["sha256"]: i for i, row in enumerate(self.rows)}
        self.class_of = {row["sha256"]: row["class"] for row in self.rows}
        self.labels = LabelFolder(self.target.folder, self.crawl_dir)
        self.checkpoint = self.root / models / f"{self.target.filter_name}.pt"
        self.scores = ScoreCache(self.rows, self.root, self.checkpoint, review_device(device))
        self.metrics_path, self.rejected_path = self.root / metrics, self.root / rejected

    # --- what the page shows ---------------------------------------------------------
    def state(self) -> dict:
        """Filter, folder, what to do next, counts per class and the filter's held-out scores."""
        scores = self.scores.get()
        target = self.target
        return {
            "filter": target.filter_name, "folder": target.folder_text, "params_key": target.params_key,
            "params_line": target.params_line, "configured": target.configured, "note": target.note(),
            "retrain": retrain_hint(self.root, target),
            "order": "uncertainty" if scores is not None else "crawl",
            "scored_by": self.relative(scores.model) if scores is not None else None,
            "scores_error": self.scores.error,
            "threshold": scores.threshold if scores is not None else None,
            "vote": scores.vote if scores is not None else None,
            "counts": self.counts(), "heldout": self.heldout(),
        }

    def counts(self) -> dict[str, dict[str, int]]:
        decided = self.labels.counts(self.class_of)
        totals: dict[str, int] = {}
        for row in self.rows:
            totals[row["class"]] = totals.get(row["class"], 0) + 1
        return {cls: {"total": total, "reviewed": decided[cls]["keep"] + decided[cls]["reject"],
                      "kept": decided[cls]["keep"], "rejected": decided[cls]["reject"]}
                for cls, total in totals.items()}

    def heldout(self) -> dict | None:
        """metrics/filter.json's held-out scores of this filter (reject is the positive class)."""
        try:
            block = json.loads(self.metrics_path.read_text())["filters"][self.target.filter_name]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        held = block.get("heldout") or {}
        return {**{key: held.get(key) for key in HELD_OUT_KEYS}, "n_train": block.get("n_train")}

    def queue(self, cls: str) -> dict:
        """Every crawled image of ``cls`` in review order, with its decision so far."""
        if cls not in set(self.class_of.values()):
            raise ReviewError(f"no crawled class {cls!r} (classes: {', '.join(sorted(set(self.class_of.values())))})",
                              status=404)
        scores = self.scores.get()
        reasons = self.quality_reasons()
        order = review_order(self.rows, scores).get(cls, [])
        items = [queue_item(self.rows[i], i, scores, self.labels.decision(self.rows[i]["sha256"]),
                            reasons.get(self.rows[i]["path"], [])) for i in order]
        return {"class": cls, "order": "uncertainty" if scores is not None else "crawl", "items": items}

    def quality_reasons(self) -> dict[str, list[str]]:
        """Raw path -> the quality checks that rejected it in the last filter run (none before one)."""
        try:
            rejected = read_jsonl(self.rejected_path)
        except (OSError, ValueError):
            return {}
        return {row.get("path"): [r for r in row.get("reasons", []) if not r.startswith(FILTER_PREFIX)]
                for row in rejected}

    # --- what the page does ----------------------------------------------------------
    def image(self, item_id: str) -> tuple[bytes, str]:
        """(bytes, file suffix) of ``item_id``'s crawled image (its sha256, a data/raw pack member),
        refused when the manifest points outside the crawl."""
        image = self._crawled(item_id)
        if not inside(self.crawl_dir, image.path):
            raise ReviewError(f"{item_id}: the manifest points outside the crawl folder", status=403)
        try:
            return read_bytes(image.path), image.path.suffix.lower()
        except FileNotFoundError:
            raise ReviewError(f"{item_id}: the crawled file is gone (crawl again?)", status=404) from None
        except OSError as err:    # a damaged pack: say so, keep serving
            raise ReviewError(f"{item_id}: cannot read the crawled image ({err.strerror or err})", status=500) from None

    def decide(self, item_id: object, decision: object) -> dict:
        written = self.labels.decide(self._crawled(item_id), decision)
        cls = self.class_of[item_id]
        return {"id": item_id, "decision": None if written is None else decision,
                "file": None if written is None else self.relative(written), "counts": {cls: self.counts()[cls]}}

    def _crawled(self, item_id: object) -> CrawledImage:
        if not isinstance(item_id, str) or not SHA256.fullmatch(item_id):
            raise ReviewError(f"id must be a crawled image's sha256, 64 hex digits (got {str(item_id)[:80]!r})")
        if item_id not in self.index_of:
            raise ReviewError(f"no crawled image with sha256 {item_id}", status=404)
        row = self.rows[self.index_of[item_id]]
        return CrawledImage(row["sha256"], row["class"], self.root / row["path"])

    def relative(self, path: str | Path) -> str:
        path = Path(path).absolute()
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
