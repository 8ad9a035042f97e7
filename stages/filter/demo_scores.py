"""Scores against the ground truth rows carry (the demo's images embed it; see stages/shared/pngmeta.py).

Only the demo's files carry truth, so a crawl of anything else gets no ``demo`` block at all.
"""
from __future__ import annotations

import numpy as np

from stages.filter.ensemble import FILTER_PREFIX, FilterRun


def _share(hit: np.ndarray, of: np.ndarray) -> float | None:
    return round(float(hit[of].mean()), 4) if of.any() else None


def demo_scores(truths: list[dict | None], reasons: list[list[str]], rows_mask: np.ndarray) -> dict:
    """Junk and distractor rejection against ground truth, over the rows in ``rows_mask``."""
    kind = np.array([(truth or {}).get("kind") for truth in truths], dtype=object)
    junk_type = np.array([(truth or {}).get("junk") for truth in truths], dtype=object)
    rejected = np.array([bool(r) for r in reasons]) & rows_mask
    by_quality = np.array([any(not x.startswith(FILTER_PREFIX) for x in r) for r in reasons]) & rows_mask
    by_ensemble = np.array([any(x.startswith(FILTER_PREFIX) for x in r) for r in reasons]) & rows_mask
    junk, distractor, pot = (kind == "junk") & rows_mask, (kind == "distractor") & rows_mask, (kind == "pot") & rows_mask
    flagged_junk = by_quality.sum()
    scores = {
        "n": {"junk": int(junk.sum()), "distractor": int(distractor.sum()), "pot": int(pot.sum())},
        "junk_recall": _share(rejected, junk), "junk_recall_quality": _share(by_quality, junk),
        "junk_precision": round(float((by_quality & junk).sum() / flagged_junk), 4) if flagged_junk else None,
        "distractor_recall": _share(rejected, distractor),
        "distractor_recall_ensemble": _share(by_ensemble, distractor),
        "pots_kept": _share(~rejected, pot),
        "junk_recall_by_type": {t: _share(rejected, junk & (junk_type == t))
                                for t in sorted({t for t in junk_type[junk] if t})},
    }
    pot_reasons: dict[str, int] = {}
    for i in np.nonzero(pot & rejected)[0]:
        for reason in reasons[i]:
            pot_reasons[reason] = pot_reasons.get(reason, 0) + 1
    scores["pots_rejected_by_reason"] = dict(sorted(pot_reasons.items()))
    return scores


def demo_metrics(rows: list[dict], reasons: list[list[str]], runs: list[FilterRun]) -> dict | None:
    """Scores over every row with truth, and over those no filter trained on; None when no
    row carries truth."""
    truths = [row.get("truth") for row in rows]
    everything = np.array([truth is not None for truth in truths], dtype=bool)
    if not everything.any():
        return None
    trained_on = np.zeros(len(rows), dtype=bool)
    for run in runs:
        for ex, held in zip(run.examples, run.held):
            if ex.row is not None and not held:
                trained_on[ex.row] = True
    return {"all": demo_scores(truths, reasons, everything),
            "heldout": demo_scores(truths, reasons, everything & ~trained_on),
            "not_in_truth": int((~everything).sum())}
