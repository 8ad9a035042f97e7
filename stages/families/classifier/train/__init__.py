"""train@classifier: data, logging, checkpoints and resume around the epoch loop (loop.py);
and hpo@classifier's trial.

bnconv trains on the 64-px shards (``ctx.train_shard``/``ctx.val_shard``). A backbone
trains on the image store (``ctx.store_dir``: train and val) at its own input size, and
its checkpoint records the eval preprocessing (``preprocess``) for classify and serve.
"""
from __future__ import annotations

import torch

from stages.common.errors import StageError
from stages.common.schema import to_dict
from stages.families.classifier.core import initial_model
from stages.families.classifier.core.data import StoreSource, eval_preprocess
from stages.families.classifier.train.loop import fit, fresh_state
from stages.shared.checkpoint import (
    load_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from stages.shared.distributed import broadcast
from stages.shared.live import FamilyLive
from stages.shared.overrides import apply_best_params
from stages.shared.shards import load_shard
from stages.shared.store import open_store

_fresh_state = fresh_state   # the name bench/transfer_mobilenet.py imports
DISTRIBUTED = True           # train(ctx) runs data-parallel under torchrun (train.classifier.nproc)


# --- data ------------------------------------------------------------------------
def _check_classes(what: str, classes: list[str], ctx) -> None:
    if list(classes) != list(ctx.params.base.classes):
        raise StageError(f"{what} classes {list(classes)} differ from base.classes {ctx.params.base.classes}; "
                         "rerun split")


def _load_shards(ctx):
    train, val = load_shard(ctx.train_shard), load_shard(ctx.val_shard)
    for name, shard in (("training shard", train), ("validation shard", val)):
        _check_classes(name, shard.classes, ctx)
    return train, val


def _load_stores(ctx, model) -> tuple[StoreSource, StoreSource]:
    """The train and val stores, cut at the model's input size (decoded on every thread)."""
    sources = []
    for name in ("train", "val"):
        store = open_store(ctx.store_dir, name)
        _check_classes(f"{ctx.store_dir}/{name}.json", store.classes, ctx)
        sources.append(StoreSource(store, model.input_size, seed=ctx.params.base.seed,
                                   workers=max(1, torch.get_num_threads())))
    return sources[0], sources[1]


# --- resume and logging ------------------------------------------------------------
def _start_state(ctx, model, generator) -> tuple[dict, dict | None]:
    """Fresh bookkeeping, or the killed run's (model and RNGs restored; optimizer state returned).
    Data-parallel, rank 0 reads the resume file (it alone writes it) and sends it to the others."""
    state = broadcast(load_resume(ctx.resume_path, ctx.fingerprint) if ctx.world.main else None, ctx.world)
    if state is None:
        return fresh_state(), None
    model.load_state_dict(state["model"])
    generator.set_state(state["generator"])
    set_rng_state(state["rng"])
    done = f"epoch {state['epoch']}" if state["epoch"] else "the probe"
    if ctx.world.main:
        print(f"train@classifier: resuming after {done} from {ctx.resume_path}")
    kept = {k: state.get(k, v) for k, v in fresh_state().items()}
    return kept, {"optimizer": state["optimizer"], "schedule": state["schedule"]}


def _open_live(ctx, history: list[dict]):
    live = FamilyLive("classifier", dir=str(ctx.metrics_dir))
    for row in history:  # DVC removed the old logs with the outputs: replay them
        for name, value in row.items():
            live.log_metric(name, value)
        live.next_step()
    return live


def _describe(cfg, epoch: int, row: dict) -> str:
    val = f"val loss {row['val/loss']:.4f} acc {row['val/accuracy']:.4f}"
    if epoch < 0:
        return f"probe ({cfg.phases.probe_epochs} passes over cached features): {val} | " \
               f"{row['images_per_second']:.0f} img/s encoded"
    return (f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train/loss']:.4f} acc {row['train/accuracy']:.3f} | "
            f"{val} | {row['images_per_second']:.0f} img/s")


def _checkpoint(ctx, cfg, model, classes, epoch: int, row: dict) -> dict:
    payload = {"family": "classifier", "model": model.state_dict(), "config": to_dict(cfg), "classes": classes,
               "epoch": epoch, "image_size": ctx.params.base.image_size,
               "val_loss": row["val/loss"], "val_accuracy": row["val/accuracy"]}
    if cfg.arch != "bnconv":
        payload["preprocess"] = eval_preprocess(model)
    return payload


def _own_dropout_draws(ctx, epoch: int) -> None:
    """Data-parallel: every rank started from the same seed (the same initial model) and the
    same restored RNG; from here each draws its own dropout masks, or the ranks' halves of a
    batch would share them. Seeded by (seed, rank, epoch): a resumed run draws them again."""
    if ctx.world.distributed:
        torch.manual_seed(hash((ctx.params.base.seed, ctx.world.rank, epoch)) % 2**63)


# --- the stage -----------------------------------------------------------------------
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
    cfg, device, classes = _effective_config(ctx), ctx.device, list(ctx.params.base.classes)
    model, note = initial_model(cfg, classes)
    model = model.to(device, memory_format=torch.channels_last)
    train_data, val_data = _load_shards(ctx) if cfg.arch == "bnconv" else _load_stores(ctx, model)
    where = "" if cfg.arch == "bnconv" else f"; {model.input_size}px views of {ctx.store_dir}"
    ranks = f"; {ctx.world.size} processes (DDP)" if ctx.world.distributed else ""
    if ctx.world.main:
        print(f"train@classifier: {cfg.arch}, {note}{where}{ranks}")
    generator = torch.Generator().manual_seed(ctx.params.base.seed)
    state, resumed = _start_state(ctx, model, generator)
    _own_dropout_draws(ctx, state["epoch"])
    live = _open_live(ctx, state["history"]) if ctx.world.main else None   # rank 0 alone logs

    def on_epoch(epoch, row, improved, optimizer, schedule):
        for name, value in row.items():
            live.log_metric(name, value)
        live.next_step()
        print(_describe(cfg, epoch, row))
        if improved:
            save_checkpoint(ctx.checkpoint_path, _checkpoint(ctx, cfg, model, classes, epoch + 1, row))
        save_checkpoint(ctx.resume_path, {
            **state, "fingerprint": ctx.fingerprint, "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer else None,
            "schedule": schedule.state_dict() if schedule else None,
            "generator": generator.get_state(), "rng": rng_state()})

    state = fit(cfg, model, train_data, val_data, params=ctx.params, device=device, generator=generator,
                state=state, resumed=resumed, on_epoch=on_epoch if ctx.world.main else None, world=ctx.world)
    if not ctx.world.main:
        return   # rank 0 alone writes checkpoints, logs and the resume file
    live.log_metric("best/val_loss", state["best_val_loss"], plot=False)
    live.log_metric("best/val_accuracy", state["best_val_accuracy"], plot=False)
    live.log_metric("best/epoch", state["best_epoch"], plot=False)
    live.end()
    ctx.resume_path.unlink(missing_ok=True)


def hpo_trial(cfg, train_shard, val_shard, *, params, device) -> dict:
    """hpo@classifier's objective: a training run on in-memory shards, no files written.
    (A backbone's trial reads the shards too: hpo compares configs, it does not ship one.)"""
    model, _ = initial_model(cfg, list(train_shard.classes))
    model = model.to(device, memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(params.base.seed)
    state = fit(cfg, model, train_shard, val_shard, params=params, device=device, generator=generator,
                state=fresh_state())
    return {"val_accuracy": state["best_val_accuracy"], "val_loss": state["best_val_loss"],
            "epochs": state["epoch"]}
