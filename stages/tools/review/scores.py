"""The filter ensemble's score for every crawled image, from its saved members.

The filter stage writes member probabilities only for the images it rejected, so the review
scores the crawl itself with the checkpoint in models/filter/<name>.pt and the filter's own
code (``member_inputs``, ``ensemble_probs``): the same decode, the same frozen trunk, the
same members. ``vote_score`` turns the K members' probabilities into the one number the
filter's vote compares with its threshold, so "closest to the threshold" is "least sure".
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.common.schema import ParamsError, from_dict
from stages.filter.config import EnsembleFilter
from stages.filter.ensemble import ensemble_probs, member_inputs
from stages.shared.checkpoint import load_checkpoint
from stages.shared.images import load_images


@dataclass
class Scores:
    """Per crawled row, the vote's statistic (keep when >= threshold; NaN: no ensemble for its class)."""
    values: np.ndarray      # (N,) float
    threshold: float
    vote: str
    model: str              # the checkpoint they came from


def vote_score(probs: np.ndarray, mode: str) -> np.ndarray:
    """(K, N) member P(keep) -> (N,) the number ``stages.filter.ensemble.vote`` thresholds.

    all: the lowest member (every member >= t iff the minimum is); majority: the
    (K//2 + 1)-th highest (more than half >= t iff it is); mean: the mean.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if mode == "all":
        return probs.min(axis=0)
    if mode == "majority":
        return -np.sort(-probs, axis=0)[probs.shape[0] // 2]
    if mode == "mean":
        return probs.mean(axis=0)
    raise ValueError(f"unknown vote mode {mode!r}")


def ensembles_by_class(checkpoint: dict) -> dict[str | None, list[dict]]:
    """Member state_dicts by class (None: one ensemble for every class)."""
    members = checkpoint["members"]
    return dict(members) if checkpoint.get("per_class") else {None: list(members)}


def score_rows(rows: list[dict], repo_root: Path, checkpoint_path: Path, device) -> Scores:
    """Score every row with the filter saved at ``checkpoint_path`` (ValueError when unreadable)."""
    checkpoint = load_checkpoint(checkpoint_path)
    try:
        cfg = from_dict(EnsembleFilter, checkpoint["config"])
    except (KeyError, TypeError, ParamsError) as err:
        raise ValueError(f"{checkpoint_path}: not a filter checkpoint ({err})") from None
    images = load_images([repo_root / row["path"] for row in rows], cfg.net.image_size, on_error="zeros")
    inputs = member_inputs(images, cfg.net, device)
    values = np.full(len(rows), np.nan)
    for cls, states in ensembles_by_class(checkpoint).items():
        mine = np.array([cls is None or row["class"] == cls for row in rows], dtype=bool)
        if mine.any() and states:
            probs = ensemble_probs(states, cfg.net, inputs[torch.as_tensor(np.nonzero(mine)[0])], device)   # (K, M)
            values[mine] = vote_score(probs, cfg.vote)
    return Scores(values, cfg.threshold, cfg.vote, str(checkpoint_path))


class ScoreCache:
    """Scores computed once per checkpoint file: a retrained filter (its file changes) is
    rescored on the next request, so the queue follows each round of ``dvc repro``."""

    def __init__(self, rows: list[dict], repo_root: Path, checkpoint_path: Path, device):
        self.rows, self.repo_root, self.path, self.device = rows, repo_root, checkpoint_path, device
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._scores: Scores | None = None
        self.error: str | None = None

    def get(self) -> Scores | None:
        """The current scores; None when no filter has been trained (or its file is unreadable: see ``error``)."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp, self._scores, self.error = stamp, None, None
                if stamp is not None:
                    try:
                        self._scores = score_rows(self.rows, self.repo_root, self.path, self.device)
                    except (ValueError, KeyError, RuntimeError) as err:   # RuntimeError: members of another shape
                        self.error = f"cannot score with {self.path} ({err.__class__.__name__}: {err})"
            return self._scores

    def _file_stamp(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino
