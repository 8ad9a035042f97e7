"""evaluate@autoencoder: reconstruction quality, and how the codes organise the classes:
a PCA scatter coloured by class, k-means clusters (NMI/ARI against the classes) and their plot."""
from __future__ import annotations

import numpy as np
import torch

from stages.families._shared import gen as genbase
from stages.families._shared.geneval import (
    balanced_pick,
    pairs_grid,
    reconstruct,
    reconstruction_metrics,
)
from stages.families._shared.genmetrics import cluster_agreement
from stages.families.autoencoder.core import load_autoencoder
from stages.shared.pictures import save_grid, scatter_plot


@torch.no_grad()
def codes_of(model, images: torch.Tensor, device, batch: int = 128) -> np.ndarray:
    """uint8 (N,3,S,S) -> flattened codes (N, code_channels * s * s)."""
    out = [model.encode(genbase.to_signed(images[i:i + batch]).to(device)).flatten(1).cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out).numpy()


def cluster_codes(codes: np.ndarray, k: int, seed: int):
    """Standardise, project to 2-D with PCA and cluster with k-means (in the full code space)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(codes)
    pca = PCA(n_components=2, random_state=seed).fit(scaled)
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(scaled)
    return pca.transform(scaled), kmeans.labels_, pca.transform(kmeans.cluster_centers_), pca


def evaluate(ctx) -> dict:
    cfg, seed = ctx.cfg, ctx.params.base.seed
    model, ckpt = load_autoencoder(ctx.checkpoint_path, ctx.device)
    test = genbase.read_shard(ctx.test_shard)
    images = genbase.resize_uint8(test.images, ckpt["config"]["image_size"])
    recon = reconstruct(model, images, ctx.device)
    codes = codes_of(model, images, ctx.device)
    k = cfg.clusters or len(test.classes)
    points, clusters, centres, pca = cluster_codes(codes, k, seed)
    labels = test.labels.numpy()
    metrics = {**reconstruction_metrics(images, recon),
               **{f"kmeans_{name}": v for name, v in cluster_agreement(labels, clusters).items()},
               "pca_explained_2d": float(pca.explained_variance_ratio_.sum()),
               "code_dim": int(codes.shape[1])}
    plots = ctx.out_dir / "plots"
    shown = min(cfg.grid, len(images))
    pick = balanced_pick(test.labels, 2 * shown)
    save_grid(pairs_grid(images[pick], recon[pick], shown), plots / "reconstructions.png", nrow=shown)
    scatter_plot(points, labels, test.classes, plots / "latent_pca.png", "autoencoder codes: PCA, by class")
    scatter_plot(points, clusters, [f"cluster {i}" for i in range(k)], plots / "latent_kmeans.png",
                 f"k-means (k={k}) on codes: NMI {metrics['kmeans_nmi']:.2f}", extra_points=centres)
    return metrics
