"""The classifier's supervised training pieces: optimizer, LR schedule, one epoch, prediction.

Batches come from a Source (core/data.py): in-memory uint8 shards augmented per image on
the fly, or the image store's views decoded on a couple of threads (no worker processes
competing for the two cores); normalised on the device, fed in channels_last layout.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from stages.families.classifier.core.data import Batches, Source, as_source
from stages.shared.runtime import autocast
from stages.shared.shards import Shard


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def make_optimizer(name: str, params, *, lr: float, weight_decay: float, momentum: float = 0.9):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}")


def make_schedule(name: str, optimizer, *, epochs: int, steps_per_epoch: int, step_size: int = 5,
                  gamma: float = 0.1):
    """Per-step LR schedule (cosine with a short warm-up, step, or constant)."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(steps_per_epoch, total // 10)
    if name == "cosine":
        def factor(step):
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    elif name == "step":
        def factor(step):
            return gamma ** (step // max(1, step_size * steps_per_epoch))
    elif name == "none":
        def factor(step):
            return 1.0
    else:
        raise ValueError(f"unknown schedule {name!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(model: nn.Module, batches: Batches, *, preprocess: Callable, optimizer, schedule,
                device: torch.device, class_weights: torch.Tensor | None = None,
                label_smoothing: float = 0.0, precision: str = "fp32") -> EpochResult:
    """One pass over ``batches`` (already shuffled and augmented by their Source)."""
    model.train()
    start, total_loss, correct, seen = time.perf_counter(), 0.0, 0, 0
    for images, labels in batches:
        images = images.to(device, non_blocking=True)             # uint8 (B,3,H,W)
        x = preprocess(images)                                     # float (B,3,H',W')
        y = labels.to(device)
        with autocast(precision, device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, weight=class_weights, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return EpochResult(total_loss / max(seen, 1), correct / max(seen, 1), seen, time.perf_counter() - start)


@torch.no_grad()
def predict_batches(model: nn.Module, batches: Batches, *, preprocess: Callable, device: torch.device,
                    precision: str = "fp32") -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images, labels, class probabilities on the CPU) per batch, in order."""
    model.eval()
    for images, labels in batches:
        with autocast(precision, device):
            logits = model(preprocess(images.to(device)))
        yield images, labels, F.softmax(logits.float(), dim=1).cpu()


def predict(model: nn.Module, data: Shard | Source, *, preprocess: Callable, batch_size: int,
            device: torch.device, precision: str = "fp32") -> torch.Tensor:
    """Class probabilities (N, C) for every image of a shard or Source (its eval view), in order."""
    data = as_source(data)
    probs = [p for _, _, p in predict_batches(model, data.eval_batches(batch_size), preprocess=preprocess,
                                              device=device, precision=precision)]
    return torch.cat(probs) if probs else torch.zeros((0, len(data.classes)))


def score(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(cross-entropy loss, accuracy) of predicted probabilities against labels."""
    if len(labels) == 0:
        return float("nan"), float("nan")
    loss = F.nll_loss(torch.log(probs.clamp_min(1e-8)), labels).item()
    return loss, (probs.argmax(1) == labels).float().mean().item()
