"""classifier family: a BN CNN trained from scratch (the borges pots classifier).

train: Adam/AdamW/SGD, cosine/step LR schedule, early stopping on validation
loss, best-checkpoint keeping, per-epoch resume. evaluate: accuracy, per-class
precision/recall/F1, a confusion matrix (DVC plot + PNG) and a grid of
misclassified test images with their top-3 predictions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from stages.batch_augment import batch_augment
from stages.checkpoint import load_checkpoint, load_resume, rng_state, save_checkpoint, set_rng_state
from stages.families import register_family
from stages.fit import make_optimizer, make_schedule, predict, score, train_epoch
from stages.nets import BNConvNet, to_float
from stages.params import StageError
from stages.rebalance import balanced_class_weights
from stages.schema import ParamsError, bounds, to_dict
from stages.shards import load_shard


@dataclass
class ClassifierConfig:
    arch: Literal["bnconv"] = "bnconv"
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    hidden: list[int] = field(default_factory=lambda: [128])
    dropout: float = field(default=0.1, metadata=bounds(ge=0, lt=1))
    head_dropout: float = field(default=0.3, metadata=bounds(ge=0, lt=1))
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = field(default=2e-3, metadata=bounds(gt=0, le=10))
    weight_decay: float = field(default=1e-4, metadata=bounds(ge=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    schedule: Literal["cosine", "step", "none"] = "cosine"
    step_size: int = field(default=5, metadata=bounds(ge=1))
    gamma: float = field(default=0.1, metadata=bounds(gt=0, le=1))
    batch_size: int = field(default=64, metadata=bounds(ge=1))
    epochs: int = field(default=12, metadata=bounds(ge=1))
    patience: int = field(default=5, metadata=bounds(ge=0))  # 0: no early stopping
    label_smoothing: float = field(default=0.0, metadata=bounds(ge=0, lt=1))

    def validate(self, path: str) -> None:
        if not self.widths or any(w < 1 for w in self.widths):
            raise ParamsError(f"{path}.widths", f"must be a non-empty list of positive ints (got {self.widths})")
        if any(h < 1 for h in self.hidden):
            raise ParamsError(f"{path}.hidden", f"must be positive ints (got {self.hidden})")


@dataclass
class ClassifierEvalConfig:
    misclassified: int = field(default=32, metadata=bounds(ge=0, le=256))  # images in the grid
    topk: int = field(default=3, metadata=bounds(ge=1))
    batch_size: int = field(default=256, metadata=bounds(ge=1))


def build_model(cfg: ClassifierConfig, num_classes: int) -> nn.Module:
    return BNConvNet(num_classes, widths=tuple(cfg.widths), hidden=tuple(cfg.hidden),
                     dropout=cfg.dropout, head_dropout=cfg.head_dropout)


def make_preprocess(device: torch.device):
    """uint8 (B,3,H,W) on device -> normalised float in channels_last (faster convs on CPU)."""
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        return to_float(images).contiguous(memory_format=torch.channels_last)
    return preprocess


def load_classifier(path, device: torch.device | str = "cpu"):
    """(model in eval mode, class names in training order, preprocess) from a kiln checkpoint."""
    checkpoint = load_checkpoint(path, device)
    from stages.schema import from_dict
    cfg = from_dict(ClassifierConfig, checkpoint["config"], "checkpoint.config")
    model = build_model(cfg, len(checkpoint["classes"]))
    model.load_state_dict(checkpoint["model"])
    model.to(device, memory_format=torch.channels_last).eval()
    return model, list(checkpoint["classes"]), make_preprocess(torch.device(device))


# --- training ------------------------------------------------------------------
def _load_shards(ctx):
    train, val = load_shard(ctx.train_shard), load_shard(ctx.val_shard)
    classes = ctx.params.base.classes
    for name, shard in (("training", train), ("validation", val)):
        if shard.classes != classes:
            raise StageError(f"{name} shard classes {shard.classes} differ from base.classes {classes}; rerun split")
    return train, val


def _class_weights(ctx, train) -> torch.Tensor | None:
    if ctx.params.split.class_weights != "balanced":
        return None
    weights = balanced_class_weights(train.labels.numpy(), len(train.classes))
    return torch.tensor(weights, dtype=torch.float32, device=ctx.device)


def _start_state(ctx, model, optimizer, schedule, generator) -> dict:
    """Fresh bookkeeping, or the killed run's, restored into model/optimizer/schedule."""
    state = load_resume(ctx.resume_path, ctx.fingerprint)
    if state is None:
        return {"epoch": 0, "best_val_loss": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    generator.set_state(state["generator"])
    set_rng_state(state["rng"])
    print(f"train@classifier: resuming after epoch {state['epoch']} from {ctx.resume_path}")
    return {k: state[k] for k in ("epoch", "best_val_loss", "best_epoch", "bad_epochs", "history")}


def _open_live(ctx, history: list[dict]):
    from dvclive import Live

    live = Live(dir=str(ctx.metrics_dir), save_dvc_exp=False, dvcyaml=None)
    for row in history:  # DVC removed the old logs with the outputs: replay them
        for name, value in row.items():
            live.log_metric(name, value)
        live.next_step()
    return live


def train(ctx) -> None:
    cfg, device = ctx.cfg, ctx.device
    train_shard, val_shard = _load_shards(ctx)
    model = build_model(cfg, len(train_shard.classes)).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum)
    steps = max(1, len(train_shard) // cfg.batch_size)
    schedule = make_schedule(cfg.schedule, optimizer, epochs=cfg.epochs, steps_per_epoch=steps,
                             step_size=cfg.step_size, gamma=cfg.gamma)
    generator = torch.Generator().manual_seed(ctx.params.base.seed)
    state = _start_state(ctx, model, optimizer, schedule, generator)
    online = ctx.params.augment.online
    augment = lambda images: batch_augment(images, online, generator)  # noqa: E731
    preprocess, weights = make_preprocess(device), _class_weights(ctx, train_shard)
    live = _open_live(ctx, state["history"])
    for epoch in range(state["epoch"], cfg.epochs):
        result = train_epoch(model, train_shard, preprocess=preprocess, optimizer=optimizer, schedule=schedule,
                             batch_size=cfg.batch_size, device=device, generator=generator, augment=augment,
                             class_weights=weights, label_smoothing=cfg.label_smoothing)
        val_loss, val_acc = score(predict(model, val_shard, preprocess=preprocess, batch_size=256,
                                          device=device), val_shard.labels)
        row = {"train/loss": result.loss, "train/accuracy": result.accuracy, "val/loss": val_loss,
               "val/accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"],
               "images_per_second": result.images_per_second}
        for name, value in row.items():
            live.log_metric(name, value)
        live.next_step()
        state["history"].append(row)
        print(f"epoch {epoch + 1}/{cfg.epochs}: loss {result.loss:.4f} acc {result.accuracy:.3f} | "
              f"val loss {val_loss:.4f} acc {val_acc:.3f} | {result.images_per_second:.0f} img/s")
        if val_loss < state["best_val_loss"]:
            state.update(best_val_loss=val_loss, best_epoch=epoch + 1, bad_epochs=0)
            save_checkpoint(ctx.checkpoint_path, {
                "family": "classifier", "model": model.state_dict(), "config": to_dict(cfg),
                "classes": list(train_shard.classes), "epoch": epoch + 1, "image_size": ctx.params.base.image_size,
                "val_loss": val_loss, "val_accuracy": val_acc})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        save_checkpoint(ctx.resume_path, {
            **state, "fingerprint": ctx.fingerprint, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "generator": generator.get_state(), "rng": rng_state()})
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            print(f"train@classifier: early stop, no val-loss improvement for {cfg.patience} epochs")
            break
    live.log_metric("best/val_loss", state["best_val_loss"], plot=False)
    live.log_metric("best/epoch", state["best_epoch"], plot=False)
    live.end()
    ctx.resume_path.unlink(missing_ok=True)


# --- evaluation ----------------------------------------------------------------
def evaluate(ctx) -> dict:
    from stages.families.classifier_report import write_report

    model, classes, preprocess = load_classifier(ctx.checkpoint_path, ctx.device)
    shard = load_shard(ctx.test_shard)
    if shard.classes != classes:
        raise StageError(f"{ctx.test_shard}: classes {shard.classes} differ from the model's {classes}")
    probs = predict(model, shard, preprocess=preprocess, batch_size=ctx.cfg.batch_size, device=ctx.device)
    return write_report(shard, probs, ctx.out_dir, misclassified=ctx.cfg.misclassified, topk=ctx.cfg.topk)


register_family("classifier", train_config=ClassifierConfig, evaluate_config=ClassifierEvalConfig,
                train=train, evaluate=evaluate)
