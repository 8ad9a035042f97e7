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
from stages.shared.pictures import labelled_grid, side_by_side, to_uint8
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


NEIGHBOUR_SIZE = 32   # px at which nearest neighbours are searched: layout and colour, not noise


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """For (N,3,S,S) queries and (M,3,S',S') bank images (uint8, or float in [-1, 1]), the index of
    the closest bank image and the RMS pixel distance to it (pixels in [0, 1], both at
    NEIGHBOUR_SIZE px): (N,) long, (N,) float."""
    flat = lambda x: genbase.resize_uint8(to_uint8(x), NEIGHBOUR_SIZE).float().div(255).flatten(1)   # noqa: E731
    keys = flat(bank)
    index, distance = [], []
    for start in range(0, len(queries), batch):
        d = torch.cdist(flat(queries[start:start + batch]), keys) / keys.shape[1] ** 0.5
        best = d.min(dim=1)
        index.append(best.indices), distance.append(best.values)
    return torch.cat(index), torch.cat(distance)


def memorisation(samples: torch.Tensor, held_out: torch.Tensor, train: torch.Tensor) -> dict[str, float]:
    """How close samples sit to their nearest training image, against held-out real images.

    ``nn_distance_ratio`` = median sample->train distance / median held-out->train distance:
    ~1 when samples are as novel as unseen real images, well below 1 when they copy training images.
    """
    sample_d = nearest_neighbours(samples, train)[1].median().item()
    held_d = nearest_neighbours(held_out, train)[1].median().item()
    return {"nn_distance": sample_d, "nn_distance_held_out": held_d, "nn_distance_ratio": sample_d / max(held_d, 1e-12)}


def balanced_pick(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Up to n indices taking classes in turn (shards are often sorted by class)."""
    per_class = [(labels == c).nonzero().flatten().tolist() for c in labels.unique().tolist()]
    picked = [i for group in zip(*per_class) for i in group]
    return torch.tensor(picked[:n] or list(range(min(n, len(labels)))), dtype=torch.long)


def recon_picture(images: torch.Tensor, recon: torch.Tensor, labels: torch.Tensor, classes: list[str],
                  per_row: int, title: str):
    """Rows alternate inputs (captioned with their class) and their reconstructions, titled."""
    grid = pairs_grid(images, recon, per_row)
    names = [classes[i] for i in labels.tolist()]
    captions, titles = [], []
    for start in range(0, len(images), per_row):
        shown = len(names[start:start + per_row])
        captions += names[start:start + per_row] + [""] * shown
        titles += ["input", "reconstruction"]
    return labelled_grid(grid, per_row, captions=captions[:len(grid)], row_titles=titles, title=title)


def neighbour_picture(samples: torch.Tensor, train_images: torch.Tensor, train_labels: torch.Tensor,
                      classes: list[str], pairs_per_row: int, title: str, sample_names: list[str] | None = None):
    """Each sample beside its nearest training image (captioned: that image's class and the RMS
    pixel distance), so a memorised sample shows as a twin."""
    index, distance = nearest_neighbours(samples, train_images)
    captions = []
    for i, (near, d) in enumerate(zip(index.tolist(), distance.tolist())):
        captions += [sample_names[i] if sample_names else "sample", f"train {classes[train_labels[near]]} {d:.3f}"]
    return labelled_grid(side_by_side(samples, train_images[index]), 2 * pairs_per_row, tile=96,
                         captions=captions, title=title)


def pairs_grid(images: torch.Tensor, recon: torch.Tensor, per_row: int) -> torch.Tensor:
    """Rows alternate inputs and their reconstructions: (2 * rows * per_row, 3, S, S) in [-1, 1]."""
    x = genbase.to_signed(images)
    rows = []
    for start in range(0, len(x), per_row):
        rows += [x[start:start + per_row], recon[start:start + per_row]]
    return torch.cat(rows)
