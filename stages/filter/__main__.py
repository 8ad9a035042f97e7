"""filter: python -m stages.filter --input data/raw/manifest.jsonl --out data/filtered.

Runs the data-quality checks (stages/filter/quality.py) over every crawled image, then
a cascade of ensemble filters (stages/filter/ensemble.py) over the survivors; a filter
without labelled examples is skipped, saying so in one line. Kept images are packed into
``<out>/<class>/<xx>.zip`` (stages/shared/packs.py) with ``<out>/manifest.jsonl`` (the raw rows, ``fields``,
``factors``, ``truth`` and ``split`` included, plus ``phash`` and ``raw_path``); every
rejected image goes to ``<out>/rejected.jsonl`` with its reasons. Ground truth comes from
the rows themselves (the demo embeds it in its files), never from a join. Nothing in
data/raw is touched.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from stages.common.errors import StageError, run_stage
from stages.common.io import write_json
from stages.common.params import Base, load_params
from stages.filter.config import Filter
from stages.filter.demo_scores import demo_metrics
from stages.filter.ensemble import (
    ALL_CLASSES,
    FILTER_PREFIX,
    VOTE_MODES,
    FilterRun,
    ensemble_probs,
    is_probe,
    member_inputs,
    probe_trunk,
    run_cascade,
    train_member,
    vote,
)
from stages.filter.labels import Example, cap_examples, example_key, for_class, gather_examples, holdout_mask
from stages.filter.outputs import (
    count_reasons,
    save_models,
    save_sheets,
    write_filtered,
)
from stages.filter.measure_pool import measure_all
from stages.filter.quality import ImageStats, quality_reasons, split_ranks
from stages.shared.images import load_images
from stages.shared.manifest import read_manifest
from stages.shared.runtime import pick_device, seed_everything, set_threads


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln filter", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="raw dataset manifest (.jsonl)")
    parser.add_argument("--out", type=Path, default=Path("data/filtered"))
    parser.add_argument("--models", type=Path, default=Path("models/filter"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/filter.json"))
    parser.add_argument("--sheets", type=Path, default=Path("metrics/filter"),
                        help="folder for the contact sheets of rejected images")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


CHUNK = 1024   # images decoded at a time: one chunk's pixels are in memory, never the whole crawl's


class MemberInputs:
    """What ensemble members read, streamed from the crawled files ``chunk`` images at a time.

    A probe's inputs are the frozen trunk's (N_rows, D) float32 features, computed once per
    (arch, image size) and shared by training, every class of a per-class filter and the
    cascade (the labelled examples are mostly crawled rows: the trunk would otherwise run
    over the same images several times); only those features are kept, no image. A convnet
    reads pixels, decoded when needed: its labelled examples to train on, then the
    cascade's rows chunk by chunk."""

    def __init__(self, rows: list[dict], device: torch.device, chunk: int = CHUNK):
        self.paths = [row["path"] for row in rows]
        self.device = device
        self.chunk = chunk
        self._features: dict[tuple[str, int], torch.Tensor] = {}

    def read(self, paths: list[str], net) -> torch.Tensor:
        """(P, ...) member inputs of these files, decoded and embedded chunk by chunk into one
        tensor (no list of chunks to concatenate: that would hold the result twice)."""
        trunk = probe_trunk(net) if is_probe(net) else None
        out = None
        for start in range(0, len(paths), self.chunk):
            images = load_images(paths[start:start + self.chunk], net.image_size, on_error="zeros")
            part = member_inputs(images, net, self.device, trunk)
            if out is None:
                out = part.new_empty((len(paths), *part.shape[1:]))
            out[start:start + len(part)] = part
        return out if out is not None else member_inputs(load_images([], net.image_size), net, self.device)

    def features(self, net) -> torch.Tensor:
        """(N_rows, D) trunk features of every crawled row (a probe's view), computed once."""
        view = (net.arch, net.image_size)
        if view not in self._features:
            self._features[view] = self.read(self.paths, net)
        return self._features[view]

    def examples(self, examples: list[Example], net) -> torch.Tensor:
        """(E, ...) inputs in example order; a crawled example is read from its row, a curated
        image outside the crawl from its own file."""
        if not is_probe(net):
            return self.read([self.paths[e.row] if e.row is not None else e.path for e in examples], net)
        from_rows = self.features(net)
        out = from_rows.new_empty((len(examples), from_rows.shape[1]))
        linked = [k for k, e in enumerate(examples) if e.row is not None]
        loose = [k for k, e in enumerate(examples) if e.row is None]
        out[linked] = from_rows[[examples[k].row for k in linked]]
        if loose:
            out[loose] = self.read([examples[k].path for k in loose], net)
        return out

    def probs(self, states: list[dict], net, index: np.ndarray) -> np.ndarray:
        """(K, M) members' P(keep) of the crawled rows ``index``, a chunk of rows at a time."""
        parts = [np.zeros((len(states), 0), dtype=np.float32)]
        for start in range(0, len(index), self.chunk):
            rows = index[start:start + self.chunk]
            inputs = (self.features(net)[torch.as_tensor(rows)] if is_probe(net)
                      else self.read([self.paths[i] for i in rows], net))
            parts.append(ensemble_probs(states, net, inputs, self.device))
        return np.concatenate(parts, axis=1)


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


def labelled_examples(fcfg, rows: list[dict], stats: list[ImageStats]) -> list[Example]:
    """A filter's labelled examples, less crawled rows that do not decode."""
    return [e for e in gather_examples(rows, fcfg.labels) if e.row is None or stats[e.row].error is None]


def cascade_note(cascade: list[str], skipped: dict[str, str]) -> str | None:
    """The one line a cascade with nothing (or less) to do prints; None when every filter runs."""
    if not cascade:
        return "filter: no cascade; quality checks only"
    if not skipped:
        return None
    rest = "quality checks only" if len(skipped) == len(cascade) else "the rest of the cascade runs"
    return (f"filter: no labelled examples for {', '.join(skipped)} (labels.demo needs the demo's images, "
            f"which carry ground truth; give labels.folder or labels.weak), skipped; {rest}")


def train_filter(name: str, position: int, fcfg, rows: list[dict], examples: list[Example],
                 params: SimpleNamespace, cache: MemberInputs) -> FilterRun:
    """Take at most ``max_examples`` labelled examples, hold some out, train the K members (per
    class with ``per_class``), score them on the held-out part."""
    seed = params.base.seed + 1000 * (position + 1)
    examples = cap_examples(examples, fcfg.max_examples, seed)
    inputs = cache.examples(examples, fcfg.net)      # read once, shared by the classes' groups
    position_of = {example_key(e): k for k, e in enumerate(examples)}
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
        group_inputs = inputs if group is examples else inputs[[position_of[example_key(e)] for e in group]]
        group_seeds = [seed + k for k in range(fcfg.members)]
        states[key] = [train_member(group_inputs[~held], labels[~held], fcfg.net, s, cache.device)
                       for s in tqdm(group_seeds, desc=f"filter {name} {key}: members", leave=False)]
        seeds += group_seeds
        used += group
        held_all.append(held)
        if held.any():
            truth.append(labels[held] == 1)
            votes.append(ensemble_probs(states[key], fcfg.net, group_inputs[held], cache.device))   # (K, H)
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


def measure_rows(rows: list[dict], quality) -> list[ImageStats]:
    """Every row's quality scores, on ``quality.workers`` processes (the same for any count)."""
    return measure_all([row["path"] for row in rows], quality.analysis_size, quality.draft, quality.workers)


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
                probs = cache.probs(states, run.cfg.net, index[mine])
                for col, i in enumerate(index[mine].tolist()):
                    probs_of.setdefault(i, {})[run.name] = [round(float(p), 4) for p in probs[:, col]]
                keep[mine] = vote(probs, run.cfg.vote, run.cfg.threshold)
            return keep
        return decide

    rejected_by = run_cascade([(run.name, decider(run)) for run in runs], len(rows), alive)
    return rejected_by, probs_of


def filter_metrics(rows: list[dict], kept: list[dict], rejected: list[dict], reasons: list[list[str]],
                   runs: list[FilterRun], sheets: list[str]) -> dict:
    """metrics/filter.json; the ``demo`` block only when rows carry ground truth."""
    metrics = {"counts": {"input": len(rows), "kept": len(kept), "rejected": len(rejected),
                          "by_reason": count_reasons(reasons)},
               "filters": {run.name: {"heldout": run.heldout, "n_train": int((~run.held).sum()),
                                      "vote": run.cfg.vote, "threshold": run.cfg.threshold,
                                      "members": run.cfg.members} for run in runs},
               "sheets": sheets}
    demo = demo_metrics(rows, reasons, runs)
    if demo is not None:
        metrics["demo"] = demo
    return metrics


def summary(metrics: dict, quality_s: float, ensemble_s: float, ran: bool, device) -> str:
    """The closing line; a speed only for work that was done."""
    counts = metrics["counts"]
    line = (f"filter: kept {counts['kept']} of {counts['input']} images, rejected {counts['rejected']} "
            f"{counts['by_reason']}")
    if counts["input"]:
        line += f"; quality {counts['input'] / max(quality_s, 1e-9):.0f} img/s"
        if ran:
            line += (f", ensembles (inputs, training, cascade) {counts['input'] / max(ensemble_s, 1e-9):.0f} "
                     f"img/s on {device}")
    return line


# --- the stage --------------------------------------------------------------------
def main(argv=None) -> None:
    args = parse_args(argv)
    params = load_params(args.params, {"base": Base, "filter": Filter})
    cfg = params.filter
    rows = read_manifest(args.input, "the crawl stage")
    set_threads(params.base.threads)
    seed_everything(params.base.seed)
    device = pick_device(params.base.device)

    start = time.perf_counter()
    stats = measure_rows(rows, cfg.quality)
    reasons, details = quality_reasons(stats, cfg.quality, split_ranks(rows))
    quality_s = time.perf_counter() - start
    examples = {name: labelled_examples(cfg.filters[name], rows, stats) for name in cfg.cascade}
    skipped = {name: "no labelled examples" for name, found in examples.items() if not found}
    note = cascade_note(cfg.cascade, skipped)
    if note:
        print(note)
    start_ensemble = time.perf_counter()    # member inputs (trunk features), training and cascade
    cache = MemberInputs(rows, device)
    runs = [train_filter(name, k, cfg.filters[name], rows, examples[name], params, cache)
            for k, name in enumerate(cfg.cascade) if examples[name]]
    alive = np.array([not r for r in reasons], dtype=bool)
    rejected_by, probs_of = apply_cascade(runs, rows, alive, cache)
    ensemble_s = time.perf_counter() - start_ensemble
    for i, name in enumerate(rejected_by):
        if name is not None:
            reasons[i].append(FILTER_PREFIX + name)

    kept, rejected = write_filtered(args.out, rows, reasons, details, stats, probs_of)
    save_models(args.models, runs, skipped)
    sheets = save_sheets(args.sheets, rejected, cfg.contact_sheet)
    metrics = filter_metrics(rows, kept, rejected, reasons, runs, sheets)
    write_json(args.metrics, metrics)
    print(summary(metrics, quality_s, ensemble_s, bool(runs), device))


if __name__ == "__main__":
    run_stage(main)
