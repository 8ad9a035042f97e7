"""Scores against the demo's ground truth (index.jsonl), when the crawl served the demo corpus."""
from __future__ import annotations

import numpy as np

from stages.filter.ensemble import FILTER_PREFIX, FilterRun


# --- scoring against the demo's ground truth --------------------------------------
def _share(hit: np.ndarray, of: np.ndarray) -> float | None:
    return round(float(hit[of].mean()), 4) if of.any() else None


def demo_scores(joined: list[dict | None], reasons: list[list[str]], rows_mask: np.ndarray) -> dict:
    """Junk and distractor rejection against ground truth, over the rows in ``rows_mask``."""
    kind = np.array([(item or {}).get("kind") for item in joined], dtype=object)
    junk_type = np.array([(item or {}).get("junk") for item in joined], dtype=object)
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


def demo_metrics(joined: list[dict | None], reasons: list[list[str]], runs: list[FilterRun]) -> dict:
    """Scores over every crawled row, and over the rows no filter trained on."""
    everything = np.array([item is not None for item in joined])
    trained_on = np.zeros(len(joined), dtype=bool)
    for run in runs:
        for ex, held in zip(run.examples, run.held):
            if ex.row is not None and not held:
                trained_on[ex.row] = True
    return {"all": demo_scores(joined, reasons, everything),
            "heldout": demo_scores(joined, reasons, everything & ~trained_on),
            "not_in_truth": int((~everything).sum())}


def with_truth_factors(rows: list[dict], joined: list[dict | None]) -> list[dict]:
    """Rows with the demo's generative factors filled in from the joined ground truth.

    A crawler cannot know an image's factors (data/raw has ``factors: null``), but the demo
    knows what it drew: carried through split into the shards, they let evaluate@vae score
    MIG/DCI. Rows that already have factors, or no truth item, are left as they are.
    """
    return [{**row, "factors": item["factors"]} if item and item.get("factors") and not row.get("factors") else row
            for row, item in zip(rows, joined)]
