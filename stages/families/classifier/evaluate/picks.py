"""Prediction over a whole test split, keeping only the images the report pictures need.

A test store of 224-px views is never held whole: the pass keeps the ``mistakes`` most
confident mistakes (the misclassified grid) and the first ``heatmaps // 2`` mistakes and
first ``heatmaps`` correct images in split order (the Grad-CAM grid). report.py's pickers,
run on that small subset, choose exactly what they would have chosen from the whole split.
"""
from __future__ import annotations

import heapq
from typing import Callable

import torch

from stages.families.classifier.core.data import Source
from stages.families.classifier.core.fit import predict_batches
from stages.shared.shards import Shard


class Keeper:
    def __init__(self, mistakes: int, heatmaps: int):
        self.mistakes, self.heatmaps = mistakes, heatmaps
        self.confident: list[tuple[float, int]] = []     # min-heap of (confidence, -index)
        self.first_wrong: list[int] = []
        self.first_right: list[int] = []
        self.kept: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def _confident_mistake(self, index: int, confidence: float) -> bool:
        """Keep among the most confident mistakes; forget the one it displaces."""
        if not self.mistakes:
            return False
        item = (confidence, -index)
        if len(self.confident) < self.mistakes:
            heapq.heappush(self.confident, item)
            return True
        if item <= self.confident[0]:
            return False
        dropped = -heapq.heapreplace(self.confident, item)[1]
        if dropped not in self.first_wrong:
            self.kept.pop(dropped, None)
        return True

    def add(self, index: int, image: torch.Tensor, label: int, probs: torch.Tensor) -> None:
        pred = int(probs.argmax())
        keep = False
        if pred != label:
            if len(self.first_wrong) < self.heatmaps // 2:
                self.first_wrong.append(index)
                keep = True
            keep = self._confident_mistake(index, float(probs[pred])) or keep
        elif len(self.first_right) < self.heatmaps:
            self.first_right.append(index)
            keep = True
        if keep:
            self.kept[index] = (image.clone(), label, probs)

    def picked(self, classes: list[str]) -> tuple[Shard, torch.Tensor]:
        """The kept images (split order) as a small shard, and their probabilities."""
        order = sorted(self.kept)
        if not order:
            return Shard(torch.zeros((0, 3, 1, 1), dtype=torch.uint8), torch.zeros(0, dtype=torch.long),
                         list(classes)), torch.zeros((0, len(classes)))
        images, labels, probs = zip(*(self.kept[i] for i in order))
        return Shard(torch.stack(images), torch.tensor(labels, dtype=torch.long), list(classes)), torch.stack(probs)


def predict_keeping(model, source: Source, *, preprocess: Callable, batch_size: int, device: torch.device,
                    mistakes: int, heatmaps: int) -> tuple[torch.Tensor, Shard, torch.Tensor]:
    """(probabilities (N, C) of the whole split, picked images as a shard, their probabilities)."""
    keeper, probs, seen = Keeper(mistakes, heatmaps), [], 0
    for images, labels, batch_probs in predict_batches(model, source.eval_batches(batch_size),
                                                       preprocess=preprocess, device=device):
        for offset, (image, label, p) in enumerate(zip(images, labels.tolist(), batch_probs)):
            keeper.add(seen + offset, image, label, p)
        seen += len(labels)
        probs.append(batch_probs)
    picked, picked_probs = keeper.picked(source.classes)
    return (torch.cat(probs) if probs else torch.zeros((0, len(source.classes)))), picked, picked_probs
