"""Evaluation steps the generative families share: FID/KID on pretrained features and
reconstruction quality (MSE, PSNR, SSIM)."""
from __future__ import annotations

from typing import Callable

import torch

from stages.families._shared import gen as genbase
from stages.families._shared.genmetrics import (
    frechet_distance,
    kernel_distance,
    psnr,
    ssim,
)
from stages.shared.featnets import PooledEmbedding, embed, resolve_network
from stages.shared.weights import weights_present


def fid_metrics(real: torch.Tensor, sets: dict[str, torch.Tensor], network: str, cfg, device) -> dict:
    """fid_<network><suffix> / kid_<network><suffix> of each uint8 (N,3,S,S) set against ``real``."""

    net = PooledEmbedding(network, cfg.feature_size)
    real_feats = embed(net, real, device).numpy()
    metrics = {}
    for suffix, images in sets.items():
        feats = embed(net, images, device).numpy()
        metrics[f"fid_{network}{suffix}"] = frechet_distance(feats, real_feats)
        metrics[f"kid_{network}{suffix}"] = kernel_distance(feats, real_feats, subsets=cfg.kid_subsets)
    return metrics


def all_fid_metrics(real: torch.Tensor, sets: dict[str, torch.Tensor], cfg, device) -> dict:
    """FID/KID on ``cfg.fid_network``, plus torchvision's Inception-v3 when its weights are cached."""

    metrics = fid_metrics(real, sets, resolve_network(cfg.fid_network), cfg, device)
    if getattr(cfg, "inception", False) and weights_present("inception_v3"):
        metrics.update(fid_metrics(real, sets, "inception_v3", cfg, device))
    return metrics


@torch.no_grad()
def reconstruct(autoencode: Callable, images: torch.Tensor, device, batch: int = 128) -> torch.Tensor:
    """Deterministic reconstructions of uint8 (N,3,S,S) images -> float (N,3,S,S) in [-1, 1], CPU."""
    out = [autoencode(genbase.to_signed(images[i:i + batch]).to(device)).cpu() for i in range(0, len(images), batch)]
    return torch.cat(out)


def reconstruction_metrics(images: torch.Tensor, recon: torch.Tensor) -> dict[str, float]:
    """Mean MSE (on [0, 1] pixels), PSNR (dB) and SSIM of reconstructions of uint8 images."""
    x = genbase.to_signed(images)
    return {"recon_mse": ((recon - x) ** 2).mean().item() / 4,   # [-1,1] -> [0,1] scale
            "recon_psnr": psnr(recon, x).mean().item(),
            "recon_ssim": ssim(recon, x).mean().item()}


def balanced_pick(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Up to n indices taking classes in turn (shards are often sorted by class)."""
    per_class = [(labels == c).nonzero().flatten().tolist() for c in labels.unique().tolist()]
    picked = [i for group in zip(*per_class) for i in group]
    return torch.tensor(picked[:n] or list(range(min(n, len(labels)))), dtype=torch.long)


def pairs_grid(images: torch.Tensor, recon: torch.Tensor, per_row: int) -> torch.Tensor:
    """Rows alternate inputs and their reconstructions: (2 * rows * per_row, 3, S, S) in [-1, 1]."""
    x = genbase.to_signed(images)
    rows = []
    for start in range(0, len(x), per_row):
        rows += [x[start:start + per_row], recon[start:start + per_row]]
    return torch.cat(rows)
