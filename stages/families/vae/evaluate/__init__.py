"""evaluate@vae: reconstruction quality, FID/KID of prior samples, disentanglement of the
latent means against the shard's ground-truth factors (MIG, DCI), and the pictures:
reconstructions beside inputs, prior samples and latent traversals."""
from __future__ import annotations

import numpy as np
import torch

from stages.families._shared import gen as genbase
from stages.families._shared.crop import crop_of, object_images
from stages.families._shared.geneval import (
    all_fid_metrics,
    balanced_pick,
    neighbour_picture,
    recon_picture,
    reconstruct,
    reconstruction_metrics,
)
from stages.families._shared.genmetrics import dci, mig
from stages.families.vae.core import BetaVAE, kl_divergence, load_vae
from stages.shared.pictures import labelled_grid, save_png, to_uint8
from stages.shared.shards import Shard


@torch.no_grad()
def encode_all(model: BetaVAE, images: torch.Tensor, device, batch: int = 128):
    """uint8 (N,3,S,S) -> posterior means and log-variances, each (N, L) on the CPU."""
    mus, logvars = [], []
    for i in range(0, len(images), batch):
        mu, logvar = model.encode(genbase.to_signed(images[i:i + batch]).to(device))
        mus.append(mu.cpu()), logvars.append(logvar.cpu())
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def prior_samples(model: BetaVAE, n: int, latent_dim: int, seed: int, device) -> torch.Tensor:
    """n decodes of z ~ N(0, I): (n, 3, S, S) in [-1, 1]."""
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([model.decode(z[i:i + 128].to(device)).cpu() for i in range(0, n, 128)])


@torch.no_grad()
def traversal(model: BetaVAE, base: torch.Tensor, dims: list[int], span: float, steps: int, device) -> torch.Tensor:
    """One row per latent dim: base code (L,) with that dim swept over [-span, span]. (len(dims)*steps, 3, S, S)."""
    values = torch.linspace(-span, span, steps)
    codes = base.repeat(len(dims) * steps, 1)                  # (rows * steps, L)
    for row, dim in enumerate(dims):
        codes[row * steps:(row + 1) * steps, dim] = values
    return model.decode(codes.to(device)).cpu()


def disentanglement(scored: list[tuple[torch.Tensor, Shard]], cfg) -> dict:
    """MIG (and DCI) of posterior means against ground-truth factors; {} when there are none.

    ``scored`` holds (codes (N, L), shard) pairs: the test shard, and the training shard when
    evaluate gets --train. Disentanglement is a property of the encoder on the data, scored on
    the training distribution in Locatello et al. 2019; the ~290 test images alone leave MIG at
    its estimator's noise floor (~0.007 with codes shuffled against factors).
    """

    shard = scored[0][1]
    if shard.factors.shape[1] == 0:
        print("vae: the test shard carries no ground-truth factors; MIG/DCI skipped")
        return {}
    # a row without ground truth (e.g. a distractor the filter kept) has NaN factors: score the rest
    known = [(~torch.isnan(s.factors).any(dim=1)) for _, s in scored]
    codes = torch.cat([mu[k] for (mu, _), k in zip(scored, known)]).numpy()
    factors = torch.cat([s.factors[k] for (_, s), k in zip(scored, known)]).numpy()
    if len(codes) < 2:
        print("vae: fewer than two images have ground-truth factors; MIG/DCI skipped")
        return {}
    score, gaps = mig(codes, factors, bins=cfg.mig_bins)
    # per-factor gaps nest under one key: dvc exp show flattens them (mig_per_factor.height)
    metrics = {"mig": score, "mig_images": len(codes),
               "mig_per_factor": {name: float(g) for name, g in zip(shard.factor_names, gaps)}}
    if cfg.dci:
        metrics.update({f"dci_{k}": v for k, v in dci(codes, factors).items()})
    return metrics


def train_images(ctx, model_cfg: dict):
    """(training shard, its images cropped and sized as the model trained), or None without --train."""
    if ctx.train_shard is None:
        return None
    train = genbase.read_shard(ctx.train_shard)
    return train, object_images(train, *crop_of(model_cfg), model_cfg["image_size"])


def scored_codes(ctx, model, test, test_mu, train) -> list:
    """(codes, shard) pairs MIG/DCI are computed on: the test shard, plus the training shard if given."""
    scored = [(test_mu, test)]
    if train is not None:
        if train[0].factor_names != test.factor_names:
            print(f"vae: {ctx.train_shard} has other factors than the test shard; MIG/DCI on the test shard only")
        else:
            scored.append((encode_all(model, train[1], ctx.device)[0], train[0]))
    return scored


def evaluate(ctx) -> dict:
    cfg, seed = ctx.cfg, ctx.params.base.seed
    model, ckpt = load_vae(ctx.checkpoint_path, ctx.device)
    model_cfg = ckpt["config"]
    test = genbase.read_shard(ctx.test_shard)
    images = object_images(test, *crop_of(model_cfg), model_cfg["image_size"])   # as trained: crops or whole
    mu, logvar = encode_all(model, images, ctx.device)
    recon = reconstruct(lambda x: model.decode(model.encode(x)[0]), images, ctx.device)   # from the means
    samples = prior_samples(model, len(images), model_cfg["latent_dim"], seed, ctx.device)
    train = train_images(ctx, model_cfg)
    kl_per_dim = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(0)   # (L,) nats
    metrics = {**reconstruction_metrics(images, recon),
               "kl": kl_divergence(mu, logvar).mean().item(),
               "active_dims": int((kl_per_dim > 0.01).sum()),
               **all_fid_metrics(images, {"": to_uint8(samples), "_recon": to_uint8(recon)}, cfg, ctx.device),
               **disentanglement(scored_codes(ctx, model, test, mu, train), cfg)}
    pick = balanced_pick(test.labels, 2 * min(cfg.grid, len(images)))
    plots = ctx.out_dir / "plots"
    shown = min(cfg.grid, len(images))
    save_png(recon_picture(images[pick], recon[pick], test.labels[pick], test.classes, shown,
                           f"vae (beta {model_cfg['beta']:g}): test inputs and their reconstructions"),
             plots / "reconstructions.png")
    _samples(cfg, model_cfg, samples, train, plots / "samples.png")
    base = pick[0].item()
    _traversals(ctx, model, mu[base], kl_per_dim, test.classes[test.labels[base]], plots / "traversals.png")
    return metrics


def _samples(cfg, model_cfg: dict, samples: torch.Tensor, train, path) -> None:
    """samples.png: prior samples, each beside its nearest training image when --train is given."""
    title = f"vae (beta {model_cfg['beta']:g}): decodes of z ~ N(0, I)"
    if train is None:
        save_png(labelled_grid(samples[:cfg.grid * 2], cfg.grid, title=title), path)
        return
    shard, images = train
    save_png(neighbour_picture(samples[:cfg.grid], images, shard.labels, shard.classes, cfg.grid // 2,
                               title + ", each beside its nearest training image"), path)


def _traversals(ctx, model, base: torch.Tensor, kl_per_dim: torch.Tensor, base_class: str, path) -> None:
    """traversals.png: one row per latent (most KL first), the base code's value swept over ±range."""
    cfg = ctx.cfg
    dims = np.argsort(-kl_per_dim.numpy()).tolist()
    rows = traversal(model, base, dims, cfg.traverse_range, cfg.traverse_steps, ctx.device)
    values = torch.linspace(-cfg.traverse_range, cfg.traverse_range, cfg.traverse_steps).tolist()
    save_png(labelled_grid(rows, cfg.traverse_steps, row_titles=[f"z{d} KL {kl_per_dim[d]:.2f}" for d in dims],
                           col_titles=[f"{v:+.2g}" for v in values],
                           title=f"vae traversals: a test {base_class}'s code, one latent set to each value"), path)
