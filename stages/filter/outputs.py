"""What the filter stage writes: the kept copies and manifests, the member checkpoints, contact sheets."""
from __future__ import annotations

from pathlib import Path

from stages.common.io import atomic_dir, write_json, write_jsonl
from stages.common.schema import to_dict
from stages.filter.contact import contact_sheet, note_sheet, save_sheet
from stages.filter.ensemble import ALL_CLASSES, FilterRun
from stages.filter.quality import ImageStats
from stages.shared.checkpoint import write_torch
from stages.shared.packs import member_name, packed_path, write_packs


# --- outputs ---------------------------------------------------------------------
def _stats_summary(s: ImageStats) -> dict:
    if s.error is not None:
        return {"error": s.error}
    return {"width": s.width, "height": s.height, "bright_high": round(s.bright_high, 4),
            "bright_low": round(s.bright_low, 4), "entropy": round(s.entropy, 3),
            "contrast": round(s.contrast, 4),
            "sharpness": round(s.sharpness, 4), "colour_spread": round(s.colour_spread, 2)}


def write_filtered(out: Path, rows: list[dict], reasons: list[list[str]], details: list[dict],
                   stats: list[ImageStats], probs_of: dict[int, dict]) -> tuple[list[dict], list[dict]]:
    """Pack kept images into out/<class>/<xx>.zip (stages.shared.packs, read from the raw
    packs); write manifest.jsonl and rejected.jsonl."""
    kept, rejected, members = [], [], []
    with atomic_dir(out) as tmp:
        for i, row in enumerate(rows):
            extra = {"phash": stats[i].phash or None}
            if reasons[i]:
                info = {"reasons": reasons[i], "quality": _stats_summary(stats[i]), **extra}
                if "duplicate_of" in details[i]:
                    info["duplicate_of"] = rows[details[i]["duplicate_of"]]["path"]
                if i in probs_of:
                    info["filter_probs"] = probs_of[i]
                rejected.append({**row, **info})
                continue
            ext = Path(row["path"]).suffix.lower()
            members.append((member_name(row["class"], row["sha256"], ext), row["path"]))
            kept.append({**row, **extra, "path": packed_path(out, row["class"], row["sha256"], ext),
                         "raw_path": row["path"]})
        write_packs(tmp, members)
        write_jsonl(tmp / "manifest.jsonl", kept)
        write_jsonl(tmp / "rejected.jsonl", rejected)
    return kept, rejected


CASCADE_FILE = "cascade.json"
NOTHING_REJECTED = "nothing-rejected.png"


def save_models(models: Path, runs: list[FilterRun], skipped: dict[str, str]) -> None:
    """models/filter/<name>.pt: member state_dicts + config, never a pickled module; and
    cascade.json, what ran and what was skipped why (so the folder is never empty: DVC
    warns about an empty output)."""
    with atomic_dir(models) as tmp:
        write_json(tmp / CASCADE_FILE, {"ran": [run.name for run in runs], "skipped": skipped})
        for run in runs:
            members = run.states[ALL_CLASSES] if ALL_CLASSES in run.states else run.states   # per class: by class
            write_torch(tmp / f"{run.name}.pt", {
                "members": members, "per_class": bool(run.cfg.per_class), "seeds": run.seeds,
                "config": to_dict(run.cfg), "classes": ["reject", "keep"], "epoch": run.cfg.net.epochs})


def save_sheets(folder: Path, rejected: list[dict], per_sheet: int) -> list[str]:
    """One contact sheet per reason (its first ``per_sheet`` images), captioned with the class."""
    by_reason: dict[str, list[dict]] = {}
    for row in rejected:
        for reason in row["reasons"]:
            by_reason.setdefault(reason, []).append(row)
    with atomic_dir(folder) as tmp:
        for reason, members in sorted(by_reason.items()):
            shown = members[:per_sheet]
            sheet = contact_sheet([r["path"] for r in shown], [r["class"] for r in shown])
            save_sheet(tmp / f"{reason.replace(':', '-')}.png", sheet)
        if not by_reason:   # an empty folder makes DVC warn; say instead that nothing was rejected
            save_sheet(tmp / NOTHING_REJECTED, note_sheet("no image was rejected"))
    return sorted(by_reason)


def count_reasons(reasons: list[list[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rs in reasons:
        for reason in rs:
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))
