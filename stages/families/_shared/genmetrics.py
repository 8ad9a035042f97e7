"""Metrics for generative models, as pure functions of tensors/arrays.

- FID / KID between two feature sets (N, D) (Heusel et al. 2017; Binkowski et al. 2018).
- PSNR / SSIM of reconstructions in [-1, 1].
- MIG (Chen et al. 2018) and DCI (Eastwood & Williams 2018) of latent codes (N, L)
  against ground-truth factors (N, K).
- NMI / ARI of a clustering against class labels.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    adjusted_rand_score,
    mutual_info_score,
    normalized_mutual_info_score,
)

PSNR_CAP = 100.0   # dB reported for identical images instead of inf (JSON has no inf)


# --- FID / KID ----------------------------------------------------------------
def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) of two (N, D) feature sets.

    With centred features Y_a (n, D), Y_b (m, D): S_a S_b has the same non-zero eigenvalues
    as M M^T for M = Y_a Y_b^T / sqrt((n-1)(m-1)) (n, m), so Tr (S_a S_b)^1/2 is the sum of
    M's singular values: exact, and no D x D matrix square root (slow, and singular for N < D).
    """
    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if len(feats_a) < 2 or len(feats_b) < 2:
        raise ValueError("FID needs at least two samples in each set")
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    y_a, y_b = feats_a - mu_a, feats_b - mu_b
    scale_a, scale_b = len(feats_a) - 1, len(feats_b) - 1
    cross = y_a @ y_b.T / np.sqrt(scale_a * scale_b)                        # (n, m)
    trace_sqrt = np.linalg.svd(cross, compute_uv=False).sum()
    value = ((mu_a - mu_b) ** 2).sum() + (y_a ** 2).sum() / scale_a + (y_b ** 2).sum() / scale_b - 2 * trace_sqrt
    return float(max(value, 0.0))


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / D + 1)^3."""
    dim = x.shape[1]
    k_xx, k_yy, k_xy = ((x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3)
    m, n = len(x), len(y)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


def kernel_distance(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 20, subset_size: int = 100,
                    seed: int = 0) -> float:
    """KID: the mean unbiased polynomial MMD^2 over random subsets of both sets."""
    feats_a, feats_b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    size = min(subset_size, len(feats_a), len(feats_b))
    if size < 2:
        raise ValueError("KID needs at least two samples in each set")
    rng = np.random.default_rng(seed)
    values = [_poly_mmd2(feats_a[rng.choice(len(feats_a), size, replace=False)],
                         feats_b[rng.choice(len(feats_b), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values))


# --- reconstruction -------------------------------------------------------------
def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (N, 3, H, W) images in [-1, 1] (peak-to-peak 2), capped at PSNR_CAP."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    value = 10 * torch.log10(4.0 / mse.clamp_min(1e-20))
    return value.clamp(max=PSNR_CAP)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()   # (3, 1, k, k) depthwise


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004; 11x11 Gaussian, sigma 1.5) of (N, 3, H, W) in [-1, 1]."""
    x, y = (a.float() + 1) / 2, (b.float() + 1) / 2   # to [0, 1]: constants for L = 1
    window = _gaussian_window(min(11, x.shape[-1])).to(x.device)
    blur = lambda t: F.conv2d(t, window, groups=3)   # noqa: E731  valid-region local means
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(1)


# --- disentanglement -------------------------------------------------------------
def discretise(values: np.ndarray, bins: int = 20) -> np.ndarray:
    """(N, K) continuous -> (N, K) integer bins per column (equal-width, as in the MIG paper's code)."""
    values = np.asarray(values, np.float64)
    out = np.zeros(values.shape, dtype=np.int64)
    for k in range(values.shape[1]):
        column = values[:, k]
        uniques = np.unique(column)
        if len(uniques) <= bins:   # already discrete (a class, a flag): keep its levels
            out[:, k] = np.searchsorted(uniques, column)
        else:
            edges = np.histogram_bin_edges(column, bins)[1:-1]
            out[:, k] = np.digitize(column, edges)
    return out


def mutual_information_matrix(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> np.ndarray:
    """(L, K) mutual information (nats) between each discretised code dim and each factor."""
    code_bins, factor_bins = discretise(codes, bins), discretise(factors, bins)
    return np.array([[mutual_info_score(factor_bins[:, k], code_bins[:, j]) for k in range(factors.shape[1])]
                     for j in range(codes.shape[1])])


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> tuple[float, np.ndarray]:
    """Mutual information gap: mean over factors of (top-1 - top-2 MI) / H(factor); also per factor."""
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors, np.float64)
    if codes.shape[1] < 2:
        raise ValueError("MIG needs at least two latent dimensions")
    mi = mutual_information_matrix(codes, factors, bins)
    factor_bins = discretise(factors, bins)
    entropy = np.array([mutual_info_score(factor_bins[:, k], factor_bins[:, k]) for k in range(factors.shape[1])])
    top2 = np.sort(mi, axis=0)[-2:]   # (2, K): second best, best
    gaps = np.where(entropy > 0, (top2[1] - top2[0]) / np.maximum(entropy, 1e-12), 0.0)
    return float(gaps.mean()), gaps


def _entropy_base(p: np.ndarray, base: int) -> np.ndarray:
    p = np.clip(p, 1e-12, None)
    return -(p * np.log(p)).sum(-1) / math.log(base)


def dci(codes: np.ndarray, factors: np.ndarray, seed: int = 0) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness (R^2) from random-forest importances."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.model_selection import train_test_split

    codes, factors = np.asarray(codes, np.float64), np.asarray(factors, np.float64)
    split = train_test_split(codes, factors, test_size=0.3, random_state=seed)
    c_train, c_test, f_train, f_test = split
    importance, scores = np.zeros((codes.shape[1], factors.shape[1])), []
    for k in range(factors.shape[1]):
        forest = RandomForestRegressor(n_estimators=40, max_depth=8, random_state=seed, n_jobs=1)
        forest.fit(c_train, f_train[:, k])
        importance[:, k] = forest.feature_importances_
        scores.append(forest.score(c_test, f_test[:, k]))
    importance = np.abs(importance) + 1e-12
    if factors.shape[1] > 1:
        per_code = 1 - _entropy_base(importance / importance.sum(1, keepdims=True), factors.shape[1])
        weight = importance.sum(1) / importance.sum()
        disentanglement = float((per_code * weight).sum())
    else:
        disentanglement = 0.0
    per_factor = 1 - _entropy_base((importance / importance.sum(0, keepdims=True)).T, max(2, codes.shape[1]))
    return {"disentanglement": disentanglement, "completeness": float(per_factor.mean()),
            "informativeness": float(np.mean(scores))}


# --- clustering -------------------------------------------------------------------
def cluster_agreement(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    return {"nmi": float(normalized_mutual_info_score(labels, clusters)),
            "ari": float(adjusted_rand_score(labels, clusters))}
