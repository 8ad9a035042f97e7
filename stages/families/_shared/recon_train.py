"""The training loop train@vae and train@autoencoder share: per-epoch losses and a reconstruction grid
through dvclive, a validation pass, the resume file each epoch."""
from __future__ import annotations

from typing import Callable

import torch
from tqdm import tqdm

from stages.families._shared import gen as genbase
from stages.families._shared.crop import object_images
from stages.shared.pictures import labelled_grid
from stages.shared.shards import iterate_batches


def beta_at(cfg, epoch: int, step: int, steps: int) -> float:
    """β with a linear warm-up from 0 over ``kl_warmup_epochs`` (counted in batches)."""
    beta, warm = getattr(cfg, "beta", 0.0), getattr(cfg, "kl_warmup_epochs", 0)
    if warm == 0:
        return beta
    return beta * min(1.0, (epoch * steps + step + 1) / (warm * steps))


def run_epoch(model, opt, shard, cfg, device, gen, loss_fn: Callable, epoch: int, desc: str) -> dict[str, float]:
    """One training pass; loss_fn(model, x (B,3,S,S) in [-1,1], beta) -> dict of scalar tensors."""
    model.train()
    batches = list(iterate_batches(shard, cfg.batch_size, shuffle=True, generator=gen,
                                   drop_last=len(shard) >= cfg.batch_size))
    totals: dict[str, float] = {}
    for step, (images, _, _) in enumerate(tqdm(batches, desc=desc, leave=False)):
        terms = loss_fn(model, genbase.to_signed(images).to(device), beta_at(cfg, epoch, step, len(batches)))
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        totals = {k: totals.get(k, 0.0) + v.item() for k, v in terms.items()}
    return {f"train_{k}": v / len(batches) for k, v in totals.items()}


@torch.no_grad()
def validate(model, shard, cfg, device, loss_fn: Callable) -> dict[str, float]:
    """Mean losses on the validation shard with the full β (no warm-up)."""
    model.eval()
    totals, count = {}, 0
    for images, _, _ in iterate_batches(shard, 128, shuffle=False):
        terms = loss_fn(model, genbase.to_signed(images).to(device), getattr(cfg, "beta", 0.0))
        totals = {k: totals.get(k, 0.0) + v.item() * len(images) for k, v in terms.items()}
        count += len(images)
    return {f"val_{k}": v / count for k, v in totals.items()}


@torch.no_grad()
def recon_pairs(model, images: torch.Tensor, device) -> torch.Tensor:
    """Inputs and reconstructions interleaved by row pairs: (2N, 3, S, S) in [-1, 1]."""
    model.eval()
    x = genbase.to_signed(images).to(device)
    out = model(x)
    x_hat = out[0] if isinstance(out, tuple) else out
    return torch.cat([x.cpu(), x_hat.cpu()])


def fit(ctx, model, loss_fn: Callable, extra_payload: Callable[[], dict]) -> None:
    """Train ``model`` on ctx's shards with Adam + exponential LR decay; resume; checkpoint."""
    cfg = ctx.cfg
    train_shard, val_shard = (genbase.read_shard(p) for p in (ctx.train_shard, ctx.val_shard))
    for shard in (train_shard, val_shard):   # the family learns the object: crop (crop: box | saliency), resize
        shard.images = object_images(shard, cfg.crop, cfg.crop_margin, cfg.image_size)
    model.to(ctx.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=getattr(cfg, "lr_decay", 1.0))
    state = genbase.load_resume(ctx)
    start = _restore(model, opt, sched, state) if state else 0
    gen = torch.Generator().manual_seed(ctx.params.base.seed + start)
    shown = val_shard.images[:8]
    timer = genbase.EpochTimer()
    with genbase.open_live(ctx, resumed=state is not None) as live:
        for epoch in range(start, cfg.epochs):
            stats = run_epoch(model, opt, train_shard, cfg, ctx.device, gen, loss_fn, epoch,
                              f"{ctx.family} epoch {epoch + 1}/{cfg.epochs}")
            stats.update(validate(model, val_shard, cfg, ctx.device, loss_fn))
            sched.step()
            _log(live, stats, timer.lap(), recon_pairs(model, shown, ctx.device), epoch, len(shown))
            genbase.save_resume(ctx, {"model": model.state_dict(), "optimiser": opt.state_dict(),
                                      "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                                      "epoch": epoch + 1})
            print(f"{ctx.family} epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
    payload = {**genbase.base_payload(ctx, train_shard.classes, cfg.epochs), "model": model.state_dict(),
               **extra_payload()}
    genbase.finish(ctx, payload)


def _restore(model, opt, sched, state) -> int:
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimiser"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return int(state["epoch"])


def _log(live, stats: dict, seconds: dict, pairs: torch.Tensor, epoch: int, per_row: int) -> None:

    for name, value in stats.items():
        live.log_metric(name, value)
    for name, value in seconds.items():
        live.log_metric(name, value)
    live.log_image(f"reconstructions/epoch_{epoch + 1:03d}.png",
                   labelled_grid(pairs, per_row, row_titles=["input", "reconstruction"], title=f"epoch {epoch + 1}"))
    live.next_step()
