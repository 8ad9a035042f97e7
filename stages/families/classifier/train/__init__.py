"""train@classifier: the epoch loop with phases, early stopping, best-checkpoint keeping, resume; and hpo@classifier's trial."""
from __future__ import annotations

import math
import warnings

import torch
from dvclive import Live

from stages.common.errors import StageError
from stages.common.schema import to_dict
from stages.families.classifier.core import (
    initial_model,
    make_preprocess,
)
from stages.families.classifier.core.finetune import (
    enter_phase,
    phase_at,
    phase_span,
)
from stages.families.classifier.core.fit import (
    make_optimizer,
    make_schedule,
    predict,
    score,
    train_epoch,
)
from stages.shared.augment_ops import batch_augment
from stages.shared.checkpoint import (
    load_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from stages.shared.overrides import apply_best_params
from stages.shared.rebalance import balanced_class_weights
from stages.shared.shards import load_shard


# --- training ------------------------------------------------------------------
def _load_shards(ctx):
    train, val = load_shard(ctx.train_shard), load_shard(ctx.val_shard)
    classes = ctx.params.base.classes
    for name, shard in (("training", train), ("validation", val)):
        if shard.classes != classes:
            raise StageError(f"{name} shard classes {shard.classes} differ from base.classes {classes}; rerun split")
    return train, val


def _class_weights(cfg, params, train, device) -> torch.Tensor | None:
    mode = params.split.class_weights if cfg.class_weights == "split" else cfg.class_weights
    if mode != "balanced":
        return None
    weights = balanced_class_weights(train.labels.numpy(), len(train.classes))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _phase(cfg, model, epoch: int):
    """The fine-tuning phase of ``epoch`` (None for bnconv: one phase, everything trains)."""
    return None if cfg.arch == "bnconv" else phase_at(cfg.phases, epoch, len(model.blocks()))


def _optimizer_for(cfg, model, epoch: int, steps: int):
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


def _fresh_state() -> dict:
    return {"epoch": 0, "best_val_loss": math.inf, "best_val_accuracy": 0.0, "best_epoch": -1,
            "bad_epochs": 0, "history": []}


def _start_state(ctx, model, generator) -> tuple[dict, dict | None]:
    """Fresh bookkeeping, or the killed run's (model and RNGs restored; optimizer state returned)."""
    state = load_resume(ctx.resume_path, ctx.fingerprint)
    if state is None:
        return _fresh_state(), None
    model.load_state_dict(state["model"])
    generator.set_state(state["generator"])
    set_rng_state(state["rng"])
    print(f"train@classifier: resuming after epoch {state['epoch']} from {ctx.resume_path}")
    kept = {k: state.get(k, v) for k, v in _fresh_state().items()}
    return kept, {"optimizer": state["optimizer"], "schedule": state["schedule"]}


def _open_live(ctx, history: list[dict]):

    live = Live(dir=str(ctx.metrics_dir), save_dvc_exp=False, dvcyaml=None)
    for row in history:  # DVC removed the old logs with the outputs: replay them
        for name, value in row.items():
            live.log_metric(name, value)
        live.next_step()
    return live


def fit(cfg, model, train_shard, val_shard, *, params, device, generator, state: dict,
        resumed: dict | None = None, on_epoch=None) -> dict:
    """Train from ``state['epoch']`` to ``cfg.epochs`` (or early stop); the shards stay in memory.

    The optimizer is rebuilt whenever the fine-tuning phase changes; ``resumed`` holds a
    killed run's optimizer/schedule state, loaded when its phase is the one continuing.
    ``on_epoch(epoch, row, improved, optimizer, schedule)`` logs and checkpoints.
    """
    steps = max(1, len(train_shard) // cfg.batch_size)
    online = params.augment.online
    augment = lambda images: batch_augment(images, online, generator)  # noqa: E731
    preprocess, weights = make_preprocess(device, cfg), _class_weights(cfg, params, train_shard, device)
    optimizer = phase = None
    for epoch in range(state["epoch"], cfg.epochs):
        if optimizer is None or _phase(cfg, model, epoch) != phase:
            optimizer, schedule = _optimizer_for(cfg, model, epoch, steps)
            if resumed is not None and epoch > 0 and _phase(cfg, model, epoch - 1) == _phase(cfg, model, epoch):
                optimizer.load_state_dict(resumed["optimizer"])
                schedule.load_state_dict(resumed["schedule"])
            if phase is not None:
                state["bad_epochs"] = 0   # a new phase is a new fit: patience starts over
            phase, resumed = _phase(cfg, model, epoch), None
        result = train_epoch(model, train_shard, preprocess=preprocess, optimizer=optimizer, schedule=schedule,
                             batch_size=cfg.batch_size, device=device, generator=generator, augment=augment,
                             class_weights=weights, label_smoothing=cfg.label_smoothing,
                             precision=cfg.precision)
        val_loss, val_acc = score(predict(model, val_shard, preprocess=preprocess, batch_size=256,
                                          device=device, precision=cfg.precision), val_shard.labels)
        row = {"train/loss": result.loss, "train/accuracy": result.accuracy, "val/loss": val_loss,
               "val/accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"],
               "images_per_second": result.images_per_second}
        state["history"].append(row)
        improved = val_loss < state["best_val_loss"]
        if improved:
            state.update(best_val_loss=val_loss, best_val_accuracy=val_acc, best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if on_epoch is not None:
            on_epoch(epoch, row, improved, optimizer, schedule)
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            print(f"train@classifier: early stop, no val-loss improvement for {cfg.patience} epochs")
            break
    return state


def _effective_config(ctx):
    """ctx.cfg, with hpo@classifier's best params over it when ``use_hpo`` is on."""

    if not ctx.cfg.use_hpo:
        return ctx.cfg
    path = ctx.extra_inputs.get("best_params")
    if path is None:
        raise StageError("train.classifier.use_hpo is true but no --input best_params=PATH was given")
    cfg = apply_best_params(ctx.cfg, path, "classifier")
    print(f"train@classifier: using hpo best params from {path}")
    return cfg


def train(ctx) -> None:
    cfg, device = _effective_config(ctx), ctx.device
    train_shard, val_shard = _load_shards(ctx)
    model, note = initial_model(cfg, list(train_shard.classes))
    model = model.to(device, memory_format=torch.channels_last)
    print(f"train@classifier: {cfg.arch}, {note}")
    generator = torch.Generator().manual_seed(ctx.params.base.seed)
    state, resumed = _start_state(ctx, model, generator)
    live = _open_live(ctx, state["history"])

    def on_epoch(epoch, row, improved, optimizer, schedule):
        for name, value in row.items():
            live.log_metric(name, value)
        live.next_step()
        print(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train/loss']:.4f} acc {row['train/accuracy']:.3f} | "
              f"val loss {row['val/loss']:.4f} acc {row['val/accuracy']:.3f} | {row['images_per_second']:.0f} img/s")
        if improved:
            save_checkpoint(ctx.checkpoint_path, {
                "family": "classifier", "model": model.state_dict(), "config": to_dict(cfg),
                "classes": list(train_shard.classes), "epoch": epoch + 1, "image_size": ctx.params.base.image_size,
                "val_loss": row["val/loss"], "val_accuracy": row["val/accuracy"]})
        save_checkpoint(ctx.resume_path, {
            **state, "fingerprint": ctx.fingerprint, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "generator": generator.get_state(), "rng": rng_state()})

    state = fit(cfg, model, train_shard, val_shard, params=ctx.params, device=device, generator=generator,
                state=state, resumed=resumed, on_epoch=on_epoch)
    live.log_metric("best/val_loss", state["best_val_loss"], plot=False)
    live.log_metric("best/epoch", state["best_epoch"], plot=False)
    live.end()
    ctx.resume_path.unlink(missing_ok=True)


def hpo_trial(cfg, train_shard, val_shard, *, params, device) -> dict:
    """hpo@classifier's objective: a training run on in-memory shards, no files written."""
    model, _ = initial_model(cfg, list(train_shard.classes))
    model = model.to(device, memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(params.base.seed)
    state = fit(cfg, model, train_shard, val_shard, params=params, device=device, generator=generator,
                state=_fresh_state())
    return {"val_accuracy": state["best_val_accuracy"], "val_loss": state["best_val_loss"],
            "epochs": state["epoch"]}
