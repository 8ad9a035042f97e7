"""The classifier's epoch loop: the probe, phases, checkpoint choice, early stopping.

bnconv keeps the checkpoint with the lowest validation loss (what the demo's figures were
measured with). A backbone keeps the highest validation accuracy, the lower loss breaking
ties: on a small, nearly solved validation set the loss keeps moving with confidence
while the accuracy is what the user asked for.
"""
from __future__ import annotations

import math
import warnings

import torch

from stages.common.errors import StageError
from stages.families.classifier.core import make_preprocess
from stages.families.classifier.core.data import as_source, for_rank
from stages.families.classifier.core.finetune import enter_phase, phase_at, phase_span
from stages.families.classifier.core.fit import (
    make_optimizer,
    make_schedule,
    train_epoch,
)
from stages.families.classifier.train.probe import run_probe
from stages.families.classifier.train.ranks import reduce_epoch, score_over_ranks
from stages.shared.distributed import SINGLE, World, data_parallel, sync_buffers
from stages.shared.rebalance import balanced_class_weights

# validation batches: bnconv's 64-px shards as they always were; 224-px views are 12x bigger
PREDICT_BATCH = {"bnconv": 256, "backbone": 64}


def fresh_state() -> dict:
    return {"epoch": 0, "best_val_loss": math.inf, "best_val_accuracy": 0.0, "best_epoch": -1,
            "bad_epochs": 0, "history": [], "probed": False}


def class_weights(cfg, params, labels: torch.Tensor, n_classes: int, device) -> torch.Tensor | None:
    mode = params.split.class_weights if cfg.class_weights == "split" else cfg.class_weights
    if mode != "balanced":
        return None
    weights = balanced_class_weights(labels.numpy(), n_classes)
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _phase(cfg, model, epoch: int):
    """The fine-tuning phase of ``epoch`` (None for bnconv: one phase, everything trains)."""
    return None if cfg.arch == "bnconv" else phase_at(cfg.phases, epoch, len(model.blocks()))


def optimizer_for(cfg, model, epoch: int, steps: int):
    """Optimizer and LR schedule for ``epoch``'s phase, the schedule advanced to ``epoch``."""
    if cfg.arch == "bnconv":
        params, scale, (start, end) = model.parameters(), 1.0, (0, cfg.epochs)
    else:
        params, phase = enter_phase(model, cfg.phases, epoch, cfg.lr, cfg.weight_decay)
        scale, (start, end) = phase.lr_scale, phase_span(cfg.phases, cfg.epochs, epoch)
    optimizer = make_optimizer(cfg.optimizer, params, lr=cfg.lr * scale, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum)
    schedule = make_schedule(cfg.schedule, optimizer, epochs=end - start, steps_per_epoch=steps,
                             step_size=cfg.step_size, gamma=cfg.gamma)
    with warnings.catch_warnings():  # "step() before optimizer.step()": we only move the position
        warnings.simplefilter("ignore")
        for _ in range((epoch - start) * steps):
            schedule.step()
    return optimizer, schedule


def record(cfg, state: dict, row: dict, epoch: int) -> bool:
    """Append ``row`` to the history; True when it is the best so far (then the checkpoint)."""
    state["history"].append(row)
    loss, acc = row["val/loss"], row["val/accuracy"]
    if cfg.arch == "bnconv":
        improved = loss < state["best_val_loss"]
    else:
        improved = (acc, -loss) > (state["best_val_accuracy"], -state["best_val_loss"])
    if improved:
        state.update(best_val_loss=loss, best_val_accuracy=acc, best_epoch=epoch, bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    return improved


def _probe(cfg, model, train, val, state, *, device, generator, weights, on_epoch, world) -> None:
    """The head fit on cached trunk features: step 0 of the log, a checkpoint candidate."""
    if cfg.arch == "bnconv" or cfg.phases.probe_epochs == 0 or state["probed"] or state["epoch"] > 0:
        return
    row = run_probe(model, train, val, cfg, device=device, generator=generator, class_weights=weights,
                    world=world)
    state["probed"] = True
    improved = record(cfg, state, row, 0)
    if on_epoch is not None:
        on_epoch(-1, row, improved, None, None)


def _epoch_row(result, val_loss: float, val_acc: float, optimizer) -> dict:
    return {"train/loss": result.loss, "train/accuracy": result.accuracy, "val/loss": val_loss,
            "val/accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"],
            "images_per_second": result.images_per_second}


def rank_batch_size(batch_size: int, world: World) -> int:
    """Each rank's share of a batch: ``batch_size`` stays the batch one step averages over,
    so the learning rate and schedule mean what they mean on one process."""
    if batch_size % world.size:
        raise StageError(f"train.classifier.batch_size {batch_size} does not split over {world.size} processes")
    return batch_size // world.size


def _start_phase(cfg, model, epoch: int, steps: int, resumed: dict | None):
    """Optimizer and schedule for ``epoch``'s phase, a killed run's state loaded when its
    phase is the one continuing."""
    optimizer, schedule = optimizer_for(cfg, model, epoch, steps)
    if (resumed is not None and resumed.get("optimizer") is not None and epoch > 0
            and _phase(cfg, model, epoch - 1) == _phase(cfg, model, epoch)):
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["schedule"])
    return optimizer, schedule


def fit(cfg, model, train_data, val_data, *, params, device, generator, state: dict,
        resumed: dict | None = None, on_epoch=None, world: World = SINGLE) -> dict:
    """Probe (backbones), then train from ``state['epoch']`` to ``cfg.epochs`` (or early stop).

    ``train_data``/``val_data``: Sources (core/data.py) or shards. The optimizer is rebuilt
    whenever the fine-tuning phase changes; ``resumed`` holds a killed run's optimizer and
    schedule state, loaded when its phase is the one continuing. ``on_epoch(epoch, row,
    improved, optimizer, schedule)`` logs and checkpoints (epoch -1: the probe, no optimizer).
    Data-parallel (``world``): each rank trains on its share of every batch through DDP and
    scores its share of val; rows and checkpoint choices are the same on every rank.
    """
    batch = rank_batch_size(cfg.batch_size, world)
    train = for_rank(as_source(train_data, params.augment.online, device), world.rank, world.size)
    val = for_rank(as_source(val_data), world.rank, world.size)
    steps = max(1, len(train) // world.size // batch)
    preprocess = make_preprocess(device, cfg)
    weights = class_weights(cfg, params, train.labels, len(train.classes), device)
    _probe(cfg, model, train, val, state, device=device, generator=generator, weights=weights, on_epoch=on_epoch,
           world=world)
    optimizer = phase = None
    for epoch in range(state["epoch"], cfg.epochs):
        if optimizer is None or _phase(cfg, model, epoch) != phase:
            optimizer, schedule = _start_phase(cfg, model, epoch, steps, resumed)
            if phase is not None:
                state["bad_epochs"] = 0   # a new phase is a new fit: patience starts over
            phase, resumed = _phase(cfg, model, epoch), None
            net = data_parallel(model, world, device)   # after (un)freezing: DDP reduces what trains now
        result = train_epoch(net, train.train_batches(epoch, batch, generator), preprocess=preprocess,
                             optimizer=optimizer, schedule=schedule, device=device, class_weights=weights,
                             label_smoothing=cfg.label_smoothing, precision=cfg.precision)
        result = reduce_epoch(result, world, device)
        sync_buffers(model, world)
        val_loss, val_acc = score_over_ranks(model, val, preprocess=preprocess, device=device, precision=cfg.precision,
                                             batch_size=PREDICT_BATCH["bnconv" if cfg.arch == "bnconv" else "backbone"],
                                             world=world)
        row = _epoch_row(result, val_loss, val_acc, optimizer)
        improved = record(cfg, state, row, epoch + 1)
        state["epoch"] = epoch + 1
        if on_epoch is not None:
            on_epoch(epoch, row, improved, optimizer, schedule)
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            measure = "val-loss" if cfg.arch == "bnconv" else "val-accuracy"
            if world.main:
                print(f"train@classifier: early stop, no {measure} improvement for {cfg.patience} epochs")
            break
    return state
