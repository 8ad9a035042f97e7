"""Which crawled images a person sees, in what order.

Per class: the images the filter ensemble is least sure of first (its vote's statistic
closest to its threshold: there a label changes the ensemble most), then the rest by
growing margin; images it cannot score (no ensemble for their class) last. With no
ensemble trained yet, every image of the class in crawl order.
"""
from __future__ import annotations

import math

from stages.tools.review.scores import Scores


def margin(score: float, threshold: float) -> float:
    """How far the ensemble is from changing its mind (inf: no score)."""
    return abs(score - threshold) if not math.isnan(score) else math.inf


def review_order(rows: list[dict], scores: Scores | None) -> dict[str, list[int]]:
    """Class -> row indices in review order."""
    by_class: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_class.setdefault(row["class"], []).append(i)
    if scores is None:
        return by_class
    return {cls: sorted(members, key=lambda i: (margin(float(scores.values[i]), scores.threshold), i))
            for cls, members in by_class.items()}


def queue_item(row: dict, index: int, scores: Scores | None, decision: str | None,
               reasons: list[str]) -> dict:
    """What the page shows of one image."""
    item = {"id": row["sha256"], "row": index, "class": row["class"], "name": row["path"].rsplit("/", 1)[-1],
            "decision": decision, "quality": reasons, "score": None, "ensemble": None}
    if scores is not None and not math.isnan(float(scores.values[index])):
        score = float(scores.values[index])
        item["score"] = round(score, 4)
        item["ensemble"] = "keep" if score >= scores.threshold else "reject"
    return item
