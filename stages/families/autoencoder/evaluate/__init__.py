"""evaluate@autoencoder: reconstruction quality, and how the codes organise the classes:
a PCA scatter coloured by class, k-means clusters (NMI/ARI against the classes) and their plot."""
from __future__ import annotations

import numpy as np
import torch

from stages.families._shared import gen as genbase
from stages.families._shared.crop import crop_of, object_images
from stages.families._shared.geneval import (
    balanced_pick,
    recon_picture,
    reconstruct,
    reconstruction_metrics,
)
from stages.families._shared.genmetrics import cluster_agreement
from stages.families.autoencoder.core import load_autoencoder
from stages.shared.pictures import save_png, scatter_plot


@torch.no_grad()
def codes_of(model, images: torch.Tensor, device, batch: int = 128) -> np.ndarray:
    """uint8 (N,3,S,S) -> flattened codes (N, code_channels * s * s)."""
    out = [model.encode(genbase.to_signed(images[i:i + batch]).to(device)).flatten(1).cpu()
           for i in range(0, len(images), batch)]
    return torch.cat(out).numpy()


def cluster_codes(codes: np.ndarray, k: int, seed: int, components: int = 0):
    """k-means of the codes: in their top ``components`` principal axes, whitened, or (0) in
    the full code space, standardised.

    Returns the 2-D points (first two principal axes), the cluster of each code, the centres in
    2-D and the fitted PCA. Whitening gives each leading axis the same weight: unwhitened, the
    first axis (overall brightness: ground and glaze) dominates the distances and k-means cuts
    along it; standardising all dimensions instead lets the many small, noisy ones weigh as much
    as the few that carry the layout.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    if 0 < components < min(codes.shape):
        pca = PCA(n_components=max(2, components), whiten=True, random_state=seed).fit(codes)
        projected = pca.transform(codes)
        kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(projected[:, :components])
        return projected[:, :2], kmeans.labels_, kmeans.cluster_centers_[:, :2], pca
    scaled = StandardScaler().fit_transform(codes)
    pca = PCA(n_components=2, random_state=seed).fit(scaled)
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(scaled)
    return pca.transform(scaled), kmeans.labels_, pca.transform(kmeans.cluster_centers_), pca


def evaluate(ctx) -> dict:
    cfg, seed = ctx.cfg, ctx.params.base.seed
    model, ckpt = load_autoencoder(ctx.checkpoint_path, ctx.device)
    test = genbase.read_shard(ctx.test_shard)
    images = object_images(test, *crop_of(ckpt["config"]), ckpt["config"]["image_size"])   # as trained
    recon = reconstruct(model, images, ctx.device)
    codes = codes_of(model, images, ctx.device)
    k = cfg.clusters or len(test.classes)
    points, clusters, centres, pca = cluster_codes(codes, k, seed, cfg.cluster_components)
    labels = test.labels.numpy()
    metrics = {**reconstruction_metrics(images, recon),
               **{f"kmeans_{name}": v for name, v in cluster_agreement(labels, clusters).items()},
               "pca_explained_2d": float(pca.explained_variance_ratio_[:2].sum()),
               "code_dim": int(codes.shape[1])}
    if cfg.cluster_components:   # the same k-means in the full code space, for comparison
        metrics["kmeans_nmi_all_dims"] = cluster_agreement(labels, cluster_codes(codes, k, seed)[1])["nmi"]
    plots = ctx.out_dir / "plots"
    shown = min(cfg.grid, len(images))
    pick = balanced_pick(test.labels, 2 * shown)
    save_png(recon_picture(images[pick], recon[pick], test.labels[pick], test.classes, shown,
                           "autoencoder: test inputs and their reconstructions"), plots / "reconstructions.png")
    scatter_plot(points, labels, test.classes, plots / "latent_pca.png", "autoencoder codes: PCA, by class")
    scatter_plot(points, clusters, [f"cluster {i}" for i in range(k)], plots / "latent_kmeans.png",
                 f"k-means (k={k}) on codes: NMI {metrics['kmeans_nmi']:.2f}\n{_space(cfg)}", extra_points=centres)
    return metrics


def _space(cfg) -> str:
    return f"(top {cfg.cluster_components} principal axes, whitened)" if cfg.cluster_components else "(all dimensions, standardised)"
