"""Turn a finished journal into data/raw: images packed by class (stages.shared.packs:
<class>/<xx>.zip), manifest.jsonl, failures.jsonl, summary.json (per search: found of
requested, kept, failed).

Searches are walked in the order given (params order; a folder source's most protected
split first) and results in page order, so which copy of a duplicate is kept does not
depend on download timing. The directory is built beside
data/raw and swapped in (stages.io.atomic_dir): data/raw is whole or untouched.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stages.common.io import atomic_dir, write_json, write_jsonl
from stages.crawl.fetch.journal import Journal
from stages.shared.packs import member_name, write_packs

SUMMARY = "summary.json"   # per search: requested (count), found (results), kept, failures


@dataclass
class Outcome:
    rows: list[dict] = field(default_factory=list)       # dataset manifest rows
    failures: list[dict] = field(default_factory=list)   # one reason each
    blobs: list[tuple[Path, str]] = field(default_factory=list)  # (blob, packed name inside out dir)
    searches: list[dict] = field(default_factory=list)   # per search: requested, found, kept, ...

    def reasons(self) -> Counter:
        """Failures per kind: the reason up to its first ':' ("http 404", "too large", ...)."""
        return Counter(reason_kind(f["reason"]) for f in self.failures)


def reason_kind(reason: str) -> str:
    if reason.startswith("duplicate of"):
        return "duplicate"
    return reason.split(":")[0].split(" (after")[0]


def collect_outcome(journal: Journal, searches: list[tuple], engine: str,
                    out_dir: Path, expand: Callable[[str], str]) -> Outcome:
    """Manifest and failure rows for ``searches`` (journal search keys: (term, class[, split]))."""
    outcome, kept_at = Outcome(), {}
    for key in searches:
        search = journal.searches[key]
        term, cls = key[0], key[1]
        where = {"term": term or None, "class": cls, "engine": engine,
                 "page_url": expand(search["page_url"])}
        if search.get("split"):
            where["split"] = search["split"]
        if search.get("error"):
            outcome.failures.append({**where, "source_url": None, "reason": search["error"]})
        outcome.failures.extend({**where, "source_url": None, "reason": "result without a full-size URL"}
                                for _ in range(search.get("missing", 0)))
        kept = duplicates = failed = 0
        for key in search["urls"]:
            item = journal.items[key]
            base = {**where, "source_url": expand(key)}
            if not item["ok"]:
                outcome.failures.append({**base, "reason": item["reason"]})
                failed += 1
            elif item["sha256"] in kept_at:
                outcome.failures.append({**base, "reason": f"duplicate of {kept_at[item['sha256']]}"})
                duplicates += 1
            else:
                name = member_name(cls, item["sha256"], item["ext"])
                kept_at[item["sha256"]] = (out_dir / name).as_posix()
                outcome.blobs.append((journal.blob_path(item["sha256"], item["ext"]), name))
                outcome.rows.append(_manifest_row(item, base, kept_at[item["sha256"]], expand))
                kept += 1
        outcome.searches.append({
            **where, "requested": search.get("requested"), "found": len(search["urls"]),
            "short": search.get("requested") is not None and len(search["urls"]) < search["requested"],
            "stopped": search.get("stopped") or "", "error": search.get("error"),
            "without_full_url": search.get("missing", 0), "kept": kept,
            "duplicates": duplicates, "failed_downloads": failed})
    return outcome


def _manifest_row(item: dict, base: dict, path: str, expand: Callable[[str], str]) -> dict:
    """A dataset manifest row; ground truth the file carried fills ``truth`` and ``factors``."""
    truth = item.get("truth")
    row = {"path": path, "sha256": item["sha256"], "class": base["class"], "fields": item["fields"],
           "factors": truth["factors"] if truth else None,
           "truth": {"kind": truth["kind"], "junk": truth["junk"]} if truth else None,
           "term": base["term"], "engine": base["engine"],
           "page_url": base["page_url"], "source_url": base["source_url"],
           "final_url": expand(item["final_url"]), "width": item["width"],
           "height": item["height"], "bytes": item["bytes"], "time": item["time"]}
    if "split" in base:
        row["split"] = base["split"]
    return row


def write_raw(outcome: Outcome, out_dir: Path, classes: list[str]) -> None:
    """Build out_dir atomically: a folder per class holding its packs (a class that kept no
    image has an empty folder), and the manifests."""
    with atomic_dir(out_dir) as tmp:
        for cls in classes:
            (tmp / cls).mkdir(exist_ok=True)
        write_packs(tmp, [(name, blob) for blob, name in outcome.blobs])
        write_jsonl(tmp / "manifest.jsonl", outcome.rows)
        write_jsonl(tmp / "failures.jsonl", outcome.failures)
        write_json(tmp / SUMMARY, {"searches": outcome.searches,
                                   "short": sum(s["short"] for s in outcome.searches),
                                   "kept": len(outcome.rows)})
