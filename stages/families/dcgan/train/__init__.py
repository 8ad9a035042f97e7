"""train@dcgan: the adversarial loop, per-epoch sample grids through dvclive, resume."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from stages.families._shared import gen as genbase
from stages.families._shared.crop import object_images
from stages.families.dcgan.core import GanSet, field_bank, grid_inputs
from stages.families.dcgan.core.nets import init_weights
from stages.families.dcgan.train.augment import diff_augment
from stages.shared.pictures import labelled_grid
from stages.shared.runtime import autocast
from stages.shared.shards import iterate_batches


def _optimisers(gans: GanSet, cfg) -> dict[str, torch.optim.Optimizer]:
    betas = (cfg.beta1, cfg.beta2)
    opts = {}
    for key in gans.keys:
        opts[f"g/{key}"] = torch.optim.Adam(gans.generators[key].parameters(), lr=cfg.lr, betas=betas)
        opts[f"d/{key}"] = torch.optim.Adam(gans.discriminators[key].parameters(), lr=cfg.lr_d or cfg.lr, betas=betas)
    return opts


def _d_loss(d_net, real, fake, labels, cond, cfg, aug, smooth) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Discriminator loss (BCE with smoothed real targets + AC-GAN class loss); also the two logits."""
    real_logit, real_class = (t.float() for t in d_net(aug(real), cond))
    fake_logit = d_net(aug(fake.detach()), cond)[0].float()
    loss = (F.binary_cross_entropy_with_logits(real_logit, smooth)
            + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
            + cfg.aux_weight * F.cross_entropy(real_class, labels))
    return loss, real_logit, fake_logit


def _step(gans: GanSet, key: str, opts, real, labels, cond, cfg, gen: torch.Generator) -> dict[str, float]:
    """One discriminator and one generator update on a batch; real is (B, 3, S, S) in [-1, 1]."""
    g_net, d_net = gans.generators[key].train(), gans.discriminators[key].train()
    aug = lambda x: diff_augment(x, cfg.diff_augment, gen)   # noqa: E731 - same policy for real and fake
    lo, hi = cfg.label_smoothing
    smooth = (lo + (hi - lo) * torch.rand(len(real), generator=gen)).to(real.device)   # clay: U(0.8, 1)
    noise = torch.randn(len(real), cfg.noise_dim, generator=gen).to(real.device)
    with autocast(cfg.precision, real.device):     # bf16 matmuls/convs where the CPU has them; losses fp32
        fake = g_net(noise, cond)                                      # (B, 3, S, S)
        d_loss, real_logit, fake_logit = _d_loss(d_net, real, fake, labels, cond, cfg, aug, smooth)
    opts[f"d/{key}"].zero_grad(set_to_none=True)
    d_loss.backward()
    opts[f"d/{key}"].step()
    with autocast(cfg.precision, real.device):
        fake_logit, fake_class = (t.float() for t in d_net(aug(fake), cond))
        g_loss = (F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
                  + cfg.aux_weight * F.cross_entropy(fake_class, labels))
    opts[f"g/{key}"].zero_grad(set_to_none=True)
    g_loss.backward()
    opts[f"g/{key}"].step()
    gans.update_ema(key)
    return {"loss_d": d_loss.item(), "loss_g": g_loss.item(),
            "d_real": torch.sigmoid(real_logit).mean().item(), "d_fake": torch.sigmoid(fake_logit).mean().item()}


def _epoch(gans: GanSet, opts, shard, cfg, device, gen: torch.Generator, desc: str) -> dict[str, float]:
    """One pass over the shard (per class when each class has its own pair); mean batch stats."""
    subsets = [(k, shard.subset((shard.labels == shard.classes.index(k)).nonzero().flatten()))
               for k in gans.keys] if cfg.per_class else [("all", shard)]
    totals, batches = {}, 0
    for key, part in subsets:
        for images, labels, fields in tqdm(list(iterate_batches(part, cfg.batch_size, shuffle=True, generator=gen,
                                                                drop_last=len(part) >= cfg.batch_size)),
                                           desc=desc, leave=False):
            real = genbase.to_signed(images).to(device)
            labels = labels.to(device)
            stats = _step(gans, key, opts, real, labels, gans.cond(labels, fields).to(device), cfg, gen)
            totals = {k: totals.get(k, 0.0) + v for k, v in stats.items()}
            batches += 1
    return {k: v / max(1, batches) for k, v in totals.items()}


def _restore(gans: GanSet, opts, state) -> int:
    gans.load(state)
    for name, opt in opts.items():
        opt.load_state_dict(state["optimisers"][name])
    torch.set_rng_state(state["rng"])
    return int(state["epoch"])


def train(ctx) -> None:
    cfg = ctx.cfg
    shard = genbase.read_shard(ctx.train_shard)
    shard.images = object_images(shard, cfg.crop, cfg.crop_margin, cfg.image_size)   # crop: box | saliency | none
    gans = GanSet(cfg, shard.classes, genbase.FieldScaler.fit(shard.fields, cfg.field_components), shard.fields.shape[1])
    for net in (*gans.generators.values(), *gans.discriminators.values()):
        net.apply(init_weights)
    gans.start_ema()
    gans.to(ctx.device)
    opts = _optimisers(gans, cfg)
    state = genbase.load_resume(ctx)
    start = _restore(gans, opts, state) if state else 0
    gen = torch.Generator().manual_seed(ctx.params.base.seed + start)
    bank = field_bank(shard)
    fixed = grid_inputs(gans, bank, cfg.grid_per_class, ctx.params.base.seed, ctx.device)
    timer = genbase.EpochTimer()
    with genbase.open_live(ctx, resumed=state is not None) as live:
        for epoch in range(start, cfg.epochs):
            stats = _epoch(gans, opts, shard, cfg, ctx.device, gen, f"dcgan epoch {epoch + 1}/{cfg.epochs}")
            _log_epoch(live, gans, fixed, stats, timer.lap(), epoch, cfg)
            payload = {**gans.state(), "optimisers": {k: o.state_dict() for k, o in opts.items()},
                       "rng": torch.get_rng_state(), "epoch": epoch + 1}
            genbase.save_resume(ctx, payload)
            print(f"dcgan epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))
    final = {**genbase.base_payload(ctx, shard.classes, cfg.epochs), **gans.state(),
             "field_dim": shard.fields.shape[1], "field_bank": bank}
    genbase.finish(ctx, final)


def _log_epoch(live, gans: GanSet, fixed, stats: dict, seconds: dict, epoch: int, cfg) -> None:

    for name, value in stats.items():
        live.log_metric(name, value)
    for name, value in seconds.items():
        live.log_metric(name, value)
    labels, cond, noise = fixed
    samples = gans.generate(labels, cond, noise)             # (classes * per_class, 3, S, S)
    live.log_image(f"samples/epoch_{epoch + 1:03d}.png",
                   labelled_grid(samples, cfg.grid_per_class, row_titles=gans.classes, title=f"dcgan epoch {epoch + 1}"))
    live.next_step()
