"""filter: python -m stages.filter --input data/raw/manifest.jsonl --out data/filtered [--truth ...].

Runs the data-quality checks (stages/quality.py) over every crawled image, then
a cascade of ensemble filters (stages/ensemble.py) over the survivors. Kept images
are copied to ``<out>/<class>/<sha256>.<ext>`` with ``<out>/manifest.jsonl`` (the
raw rows plus ``phash`` and ``raw_path``); every rejected image goes to
``<out>/rejected.jsonl`` with its reasons. Nothing in data/raw is touched.
"""
from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from stages.common.errors import StageError, run_stage
from stages.common.io import atomic_dir, read_jsonl, write_json, write_jsonl
from stages.common.params import Base, load_params
from stages.common.schema import to_dict
from stages.filter.config import Filter
from stages.filter.contact import contact_sheet, save_sheet
from stages.filter.ensemble import (
    VOTE_MODES,
    ensemble_probs,
    member_inputs,
    run_cascade,
    train_member,
    vote,
)
from stages.filter.labels import (
    Example,
    for_class,
    gather_examples,
    holdout_mask,
    join_truth,
    load_truth,
)
from stages.filter.quality import ImageStats, measure, quality_reasons
from stages.shared.runtime import pick_device, seed_everything, set_threads
from stages.shared.shards import load_rgb

FILTER_PREFIX = "filter:"   # reason of an image an ensemble filter rejected, e.g. filter:object
ALL_CLASSES = "*"           # the key of a filter's one ensemble when it is not per class


@dataclass
class FilterRun:
    """One trained cascade filter and the labelled examples it saw."""
    name: str
    cfg: object                 # EnsembleFilter
    states: dict[str, list[dict]]   # member state_dicts by class (ALL_CLASSES unless per_class)
    seeds: list[int]
    examples: list[Example]
    held: np.ndarray            # (E,) bool: example held out for scoring
    heldout: dict               # precision / recall / F1 on the held-out examples


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln filter", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="raw dataset manifest (.jsonl)")
    parser.add_argument("--out", type=Path, default=Path("data/filtered"))
    parser.add_argument("--models", type=Path, default=Path("models/filter"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/filter.json"))
    parser.add_argument("--sheets", type=Path, default=Path("metrics/filter"),
                        help="folder for the contact sheets of rejected images")
    parser.add_argument("--truth", type=Path, default=None,
                        help="demo ground truth (index.jsonl): scoring and demo labels")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def load_manifest(path: Path) -> list[dict]:
    try:
        rows = read_jsonl(path)
    except FileNotFoundError as err:
        raise StageError(f"{path}: input manifest not found (run the crawl stage first)") from err
    except ValueError as err:
        raise StageError(str(err)) from err
    for line_no, row in enumerate(rows, 1):
        missing = [key for key in ("path", "sha256", "class") if not isinstance(row.get(key), str)]
        if missing:
            raise StageError(f"{path}:{line_no}: row lacks {', '.join(missing)}")
        if "/" in row["class"] or row["class"] in ("", ".", ".."):
            raise StageError(f"{path}:{line_no}: class {row['class']!r} is not a folder name")
    return rows


def load_net_images(paths: list[str], size: int) -> torch.Tensor:
    """(N, 3, size, size) uint8, letterboxed like the training shards; unreadable files are zeros."""
    arrays = []
    for path in paths:
        try:
            arrays.append(load_rgb(path, size))
        except (OSError, ValueError):
            arrays.append(np.zeros((size, size, 3), dtype=np.uint8))
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), dtype=np.uint8)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


class MemberInputs:
    """What ensemble members read for each crawled row (images, or the frozen trunk's
    features), computed once per (arch, image size) and shared by training, every class of
    a per-class filter and the cascade: the labelled examples are mostly crawled rows, so
    the trunk would otherwise run over the same images several times."""

    def __init__(self, rows: list[dict], device: torch.device):
        self.paths = [row["path"] for row in rows]
        self.device = device
        self._by_view: dict[tuple[str, int], torch.Tensor] = {}

    def rows(self, net) -> torch.Tensor:
        """(N_rows, ...) inputs for every crawled row."""
        view = (net.arch, net.image_size)
        if view not in self._by_view:
            self._by_view[view] = member_inputs(load_net_images(self.paths, net.image_size), net, self.device)
        return self._by_view[view]

    def examples(self, examples: list[Example], net) -> torch.Tensor:
        """(E, ...) inputs in example order; curated images outside the crawl are read here."""
        from_rows = self.rows(net)
        loose = [k for k, e in enumerate(examples) if e.row is None]
        out = from_rows.new_empty((len(examples), *from_rows.shape[1:]))
        linked = [k for k, e in enumerate(examples) if e.row is not None]
        out[linked] = from_rows[[examples[k].row for k in linked]]
        if loose:
            out[loose] = member_inputs(load_net_images([examples[k].path for k in loose], net.image_size),
                                       net, self.device)
        return out


def reject_scores(keep_true: np.ndarray, keep_pred: np.ndarray) -> dict:
    """Precision / recall / F1 of rejecting (the positive class is 'reject')."""
    keep_true, keep_pred = np.asarray(keep_true, bool), np.asarray(keep_pred, bool)
    tp = int((~keep_pred & ~keep_true).sum())
    fp = int((~keep_pred & keep_true).sum())
    fn = int((keep_pred & ~keep_true).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else None)
    kept_of_keep = float(keep_pred[keep_true].mean()) if keep_true.any() else None
    return {"precision": precision, "recall": recall, "f1": f1, "keep_recall": kept_of_keep,
            "n": int(len(keep_true)), "n_reject": int((~keep_true).sum())}


def train_filter(name: str, position: int, fcfg, rows: list[dict], joined, stats: list[ImageStats],
                 params: SimpleNamespace, cache: MemberInputs) -> FilterRun:
    """Gather labels, hold some out, train the K members (per class with ``per_class``), score them
    on the held-out part."""
    examples = [e for e in gather_examples(rows, joined, fcfg.labels)
                if e.row is None or stats[e.row].error is None]
    seed = params.base.seed + 1000 * (position + 1)
    groups = ({cls: for_class(examples, rows, cls) for cls in sorted({row["class"] for row in rows})}
              if fcfg.per_class else {ALL_CLASSES: examples})
    states, seeds, used, held_all, truth, votes = {}, [], [], [], [], []
    for key, group in groups.items():
        where = f"filter.filters.{name}.labels" + ("" if key == ALL_CLASSES else f" (class {key})")
        labels = np.array([e.keep for e in group], dtype=np.int64)
        if labels.sum() == 0 or labels.sum() == len(labels):
            raise StageError(f"{where}: needs both keep and reject examples "
                             f"(found {int(labels.sum())} keep, {int(len(labels) - labels.sum())} reject)")
        held = holdout_mask(group, fcfg.holdout, seed)
        inputs = cache.examples(group, fcfg.net)
        group_seeds = [seed + k for k in range(fcfg.members)]
        states[key] = [train_member(inputs[~held], labels[~held], fcfg.net, s, cache.device)
                       for s in tqdm(group_seeds, desc=f"filter {name} {key}: members", leave=False)]
        seeds += group_seeds
        used += group
        held_all.append(held)
        if held.any():
            truth.append(labels[held] == 1)
            votes.append(ensemble_probs(states[key], fcfg.net, inputs[held], cache.device))   # (K, H)
    return FilterRun(name, fcfg, states, seeds, used, np.concatenate(held_all), heldout_scores(truth, votes, fcfg))


def heldout_scores(truth: list[np.ndarray], probs: list[np.ndarray], fcfg) -> dict:
    """Reject precision / recall / F1 on the held-out examples of every group, pooled."""
    if not truth:
        return {"n": 0}
    keep_true = np.concatenate(truth)
    decide = lambda mode: np.concatenate([vote(p, mode, fcfg.threshold) for p in probs])   # noqa: E731
    scores = reject_scores(keep_true, decide(fcfg.vote))
    # the same members under every vote mode, for choosing one without retraining
    scores["by_vote"] = {mode: reject_scores(keep_true, decide(mode)) for mode in VOTE_MODES}
    return scores


def measure_all(rows: list[dict], analysis_size: int) -> list[ImageStats]:
    return [measure(row["path"], analysis_size) for row in tqdm(rows, desc="filter: quality", leave=False)]


def apply_cascade(runs: list[FilterRun], rows: list[dict], alive: np.ndarray,
                  cache: MemberInputs) -> tuple[list[str | None], dict[int, dict]]:
    """Run the filters in order over the rows still alive; per row the rejecting filter and member probs."""
    probs_of: dict[int, dict] = {}

    def decider(run: FilterRun):
        def decide(index: np.ndarray) -> np.ndarray:
            keep = np.zeros(len(index), dtype=bool)
            for key, states in run.states.items():     # per class: each row meets its class's ensemble
                mine = np.array([key in (ALL_CLASSES, rows[i]["class"]) for i in index], dtype=bool)
                if not mine.any():
                    continue
                probs = ensemble_probs(states, run.cfg.net, cache.rows(run.cfg.net)[torch.as_tensor(index[mine])],
                                       cache.device)
                for col, i in enumerate(index[mine].tolist()):
                    probs_of.setdefault(i, {})[run.name] = [round(float(p), 4) for p in probs[:, col]]
                keep[mine] = vote(probs, run.cfg.vote, run.cfg.threshold)
            return keep
        return decide

    rejected_by = run_cascade([(run.name, decider(run)) for run in runs], len(rows), alive)
    return rejected_by, probs_of


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
    """Copy kept images to out/<class>/<sha256><ext>; write manifest.jsonl and rejected.jsonl."""
    kept, rejected = [], []
    with atomic_dir(out) as tmp:
        for i, row in enumerate(tqdm(rows, desc="filter: write", leave=False)):
            extra = {"phash": stats[i].phash or None}
            if reasons[i]:
                info = {"reasons": reasons[i], "quality": _stats_summary(stats[i]), **extra}
                if "duplicate_of" in details[i]:
                    info["duplicate_of"] = rows[details[i]["duplicate_of"]]["path"]
                if i in probs_of:
                    info["filter_probs"] = probs_of[i]
                rejected.append({**row, **info})
                continue
            name = f"{row['sha256']}{Path(row['path']).suffix.lower()}"
            (tmp / row["class"]).mkdir(exist_ok=True)
            shutil.copyfile(row["path"], tmp / row["class"] / name)
            kept.append({**row, **extra, "path": str(PurePosixPath(out.as_posix(), row["class"], name)),
                         "raw_path": row["path"]})
        write_jsonl(tmp / "manifest.jsonl", kept)
        write_jsonl(tmp / "rejected.jsonl", rejected)
    return kept, rejected


def save_models(models: Path, runs: list[FilterRun]) -> None:
    """models/filter/<name>.pt: member state_dicts + config, never a pickled module."""
    with atomic_dir(models) as tmp:
        for run in runs:
            members = run.states[ALL_CLASSES] if ALL_CLASSES in run.states else run.states   # per class: by class
            torch.save({"members": members, "per_class": bool(run.cfg.per_class), "seeds": run.seeds, "config": to_dict(run.cfg),
                        "classes": ["reject", "keep"], "epoch": run.cfg.net.epochs}, tmp / f"{run.name}.pt")


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
    return sorted(by_reason)


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


def count_reasons(reasons: list[list[str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rs in reasons:
        for reason in rs:
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def with_truth_factors(rows: list[dict], joined: list[dict | None]) -> list[dict]:
    """Rows with the demo's generative factors filled in from the joined ground truth.

    A crawler cannot know an image's factors (data/raw has ``factors: null``), but the demo
    knows what it drew: carried through split into the shards, they let evaluate@vae score
    MIG/DCI. Rows that already have factors, or no truth item, are left as they are.
    """
    return [{**row, "factors": item["factors"]} if item and item.get("factors") and not row.get("factors") else row
            for row, item in zip(rows, joined)]


# --- the stage --------------------------------------------------------------------
def main(argv=None) -> None:
    args = parse_args(argv)
    params = load_params(args.params, {"base": Base, "filter": Filter})
    cfg = params.filter
    rows = load_manifest(args.input)
    joined = join_truth(rows, load_truth(args.truth)) if args.truth else None
    if joined is not None:
        rows = with_truth_factors(rows, joined)
    set_threads(params.base.threads)
    seed_everything(params.base.seed)
    device = pick_device(params.base.device)

    start = time.perf_counter()
    stats = measure_all(rows, cfg.quality.analysis_size)
    reasons, details = quality_reasons(stats, cfg.quality)
    quality_s = time.perf_counter() - start
    start_ensemble = time.perf_counter()    # member inputs (trunk features), training and cascade
    cache = MemberInputs(rows, device)
    runs = [train_filter(name, k, cfg.filters[name], rows, joined, stats, params, cache)
            for k, name in enumerate(cfg.cascade)]
    alive = np.array([not r for r in reasons], dtype=bool)
    rejected_by, probs_of = apply_cascade(runs, rows, alive, cache)
    ensemble_s = time.perf_counter() - start_ensemble
    for i, name in enumerate(rejected_by):
        if name is not None:
            reasons[i].append(FILTER_PREFIX + name)

    kept, rejected = write_filtered(args.out, rows, reasons, details, stats, probs_of)
    save_models(args.models, runs)
    sheets = save_sheets(args.sheets, rejected, cfg.contact_sheet)
    metrics = {"counts": {"input": len(rows), "kept": len(kept), "rejected": len(rejected),
                          "by_reason": count_reasons(reasons)},
               "filters": {run.name: {"heldout": run.heldout, "n_train": int((~run.held).sum()),
                                      "vote": run.cfg.vote, "threshold": run.cfg.threshold,
                                      "members": run.cfg.members} for run in runs},
               "sheets": sheets}
    if joined is not None:
        metrics["demo"] = demo_metrics(joined, reasons, runs)
    write_json(args.metrics, metrics)
    print(f"filter: kept {len(kept)} of {len(rows)} images, rejected {len(rejected)} "
          f"{metrics['counts']['by_reason']}; quality {len(rows) / max(quality_s, 1e-9):.0f} img/s, "
          f"ensembles (inputs, training, cascade) {len(rows) / max(ensemble_s, 1e-9):.0f} img/s on {device}")


if __name__ == "__main__":
    run_stage(main)
