"""The classifier's figures over data-parallel ranks: each rank saw its share, the log
records the whole. On one process both functions are what the loop always computed."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stages.families.classifier.core.data import Source
from stages.families.classifier.core.fit import (
    EpochResult,
    predict,
    predict_batches,
    score,
)
from stages.shared.distributed import World, max_over_ranks, sum_over_ranks


def reduce_epoch(result: EpochResult, world: World, device: torch.device) -> EpochResult:
    """Loss and accuracy over every rank's images; the slowest rank's time (ranks step
    together), so images_per_second is the whole job's."""
    if not world.distributed:
        return result
    loss, correct, images = sum_over_ranks(
        [result.loss * result.images, result.accuracy * result.images, result.images], world, device)
    seconds = max_over_ranks(result.seconds, world, device)
    return EpochResult(loss / max(images, 1), correct / max(images, 1), round(images), seconds)


def score_over_ranks(model, data: Source, *, preprocess, batch_size: int, device: torch.device,
                     precision: str, world: World) -> tuple[float, float]:
    """(cross-entropy, accuracy) of ``model`` on ``data``, the same number on every rank:
    one process scores all of it; ranks score their shares (``data`` is rank-sharded) and sum."""
    if not world.distributed:
        return score(predict(model, data, preprocess=preprocess, batch_size=batch_size, device=device,
                             precision=precision), data.labels)
    nll, correct, count = 0.0, 0, 0
    for _, labels, probs in predict_batches(model, data.eval_batches(batch_size), preprocess=preprocess,
                                            device=device, precision=precision):
        nll += F.nll_loss(torch.log(probs.clamp_min(1e-8)), labels, reduction="sum").item()
        correct += (probs.argmax(1) == labels).sum().item()
        count += len(labels)
    nll, correct, count = sum_over_ranks([nll, correct, count], world, device)
    if count == 0:
        return float("nan"), float("nan")
    return nll / count, correct / count
