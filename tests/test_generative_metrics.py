"""Generative metrics against cases whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from stages.families._shared.genmetrics import (PSNR_CAP, cluster_agreement, dci, discretise, frechet_distance,
                               kernel_distance, mig, psnr, ssim)


def _reference_fid(a, b):
    """The textbook formula with scipy's matrix square root."""
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 32))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)
    near, far = feats + 0.1, feats + 1.0
    assert frechet_distance(feats, near) == pytest.approx(32 * 0.01, rel=1e-6)   # only the mean term
    assert frechet_distance(feats, far) > frechet_distance(feats, near)


def test_fid_matches_the_matrix_square_root_formula():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(150, 20))
    b = rng.normal(size=(90, 20)) @ rng.normal(size=(20, 20)) * 0.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(_reference_fid(a, b), rel=1e-6)


def test_fid_works_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 1280)), rng.normal(size=(40, 1280)) + 0.2
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, shifted = kernel_distance(a, b, subsets=10), kernel_distance(a, b + 1.0, subsets=10)
    assert abs(same) < 0.05
    assert shifted > 10 * max(abs(same), 1e-3)


def test_psnr_identical_images_hit_the_cap_and_a_known_offset_gives_its_value():
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.all(psnr(x, x) == PSNR_CAP)
    # an offset of 0.1 on [-1, 1] images: MSE 0.01, peak-to-peak 2 -> 10 log10(4 / 0.01)
    assert psnr(x, x + 0.1) == pytest.approx(torch.full((3,), 10 * np.log10(400.0)), rel=1e-4)


def test_ssim_is_one_for_identical_images_and_near_zero_for_independent_noise():
    gen = torch.Generator().manual_seed(0)
    x, y = (torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-5)
    assert ssim(x, y).abs().max() < 0.1


def test_mig_of_a_perfectly_disentangled_code_is_near_one_and_of_noise_near_zero():
    rng = np.random.default_rng(4)
    factors = rng.uniform(size=(4000, 3))
    # each factor in its own latent (permuted), plus two unused noise latents
    disentangled = np.c_[factors[:, [2, 0, 1]], rng.normal(size=(4000, 2))]
    score, gaps = mig(disentangled, factors)
    assert score > 0.9 and gaps.shape == (3,)
    assert mig(rng.normal(size=(4000, 5)), factors)[0] < 0.05


def test_mig_is_low_when_every_latent_mixes_every_factor():
    rng = np.random.default_rng(5)
    factors = rng.uniform(size=(3000, 3))
    mixed = factors @ np.array([[1.0, 1.0, 0.9], [1.0, -1.0, 0.8], [0.9, 0.8, -1.0]])
    assert mig(mixed, factors)[0] < 0.3 < mig(factors, factors)[0]


def test_discretise_keeps_discrete_columns_as_levels():
    values = np.array([[0.0, 0.5], [1.0, 0.1], [0.0, 0.9]])
    bins = discretise(values, bins=20)
    assert bins[:, 0].tolist() == [0, 1, 0]


def test_dci_separates_a_disentangled_code_from_noise():
    rng = np.random.default_rng(6)
    factors = rng.uniform(size=(600, 3))
    good = dci(np.c_[factors, rng.normal(size=(600, 2))], factors)
    bad = dci(rng.normal(size=(600, 5)), factors)
    assert good["disentanglement"] > 0.8 and good["completeness"] > 0.8 and good["informativeness"] > 0.9
    assert bad["disentanglement"] < 0.3 and bad["informativeness"] < 0.2


def test_cluster_agreement_perfect_and_permuted_labels():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_agreement(labels, np.array([2, 2, 0, 0, 1, 1])) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    assert cluster_agreement(labels, np.array([0, 1, 0, 1, 0, 1]))["ari"] < 0.1


def test_vae_disentanglement_scores_only_rows_with_ground_truth():
    """A kept distractor has no factors (NaN): MIG/DCI use the other rows instead of failing;
    with the training shard given, its rows are scored too."""
    from types import SimpleNamespace

    import torch

    from stages.families.vae.evaluate import disentanglement

    gen = torch.Generator().manual_seed(0)
    factors = torch.rand(200, 2, generator=gen)
    mu = torch.cat([factors * 4, torch.randn(200, 1, generator=gen)], dim=1)       # codes follow factors
    factors[:20] = float("nan")
    shard = SimpleNamespace(factors=factors, factor_names=["height", "width"])
    cfg = SimpleNamespace(mig_bins=10, dci=False)
    metrics = disentanglement([(mu, shard)], cfg)
    assert metrics["mig_images"] == 180 and metrics["mig"] > 0.3
    train = SimpleNamespace(factors=torch.rand(50, 2, generator=gen), factor_names=["height", "width"])
    both = disentanglement([(mu, shard), (torch.cat([train.factors * 4, torch.zeros(50, 1)], dim=1), train)], cfg)
    assert both["mig_images"] == 230 and both["mig"] > 0.3
    shard.factors = torch.full((5, 2), float("nan"))
    assert disentanglement([(mu[:5], shard)], cfg) == {}
