"""Object-centred crops for the generative families, and the pictures that explain them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.demo import render
from stages.families._shared import crop
from stages.families._shared.gen import resize_uint8
from stages.families._shared.geneval import (
    memorisation,
    nearest_neighbours,
    recon_picture,
)
from stages.families.dcgan.core import slerp
from stages.shared.pictures import image_grid, labelled_grid, side_by_side
from stages.shared.shards import Shard


def _coverage_box(coverage: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(coverage > 0.5)
    size = coverage.shape[0]
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / size


def _pots(n: int, size: int = 64):
    pots = [render.render_pot(7, i % 2, i, size) for i in range(n)]
    names = list(render.FACTOR_NAMES)
    factors = torch.tensor([[pot.factors[name] for name in names] for pot in pots], dtype=torch.float32)
    images = torch.from_numpy(np.stack([pot.image for pot in pots])).permute(0, 3, 1, 2).contiguous()
    return pots, Shard(images, torch.arange(n) % 2, ["bowl", "vase"], factors=factors, factor_names=names,
                       paths=[f"p{i}.png" for i in range(n)])


def test_factor_boxes_enclose_the_rendered_pot_tightly():
    pots, shard = _pots(12)
    boxes = crop.factor_boxes(shard.factors, shard.factor_names).numpy()
    truth = np.stack([_coverage_box(pot.coverage) for pot in pots])
    assert (boxes[:, :2] <= truth[:, :2] + 0.02).all() and (boxes[:, 2:] >= truth[:, 2:] - 0.02).all()
    assert np.abs(boxes - truth).mean() < 0.06


def test_saliency_finds_an_object_on_a_gradient_and_on_a_noisy_ground():
    size, gen = 64, torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, size)
    gradient = torch.stack([40 + 150 * ramp[None, :].expand(size, size), 90 + 60 * ramp[:, None].expand(size, size),
                            torch.full((size, size), 120.0)])
    noisy = torch.full((3, size, size), 110.0) + 12 * torch.randn(3, size, size, generator=gen)
    images = torch.stack([gradient, noisy]).clamp(0, 255)
    images[:, :, 20:50, 10:30] = torch.tensor([230.0, 20, 20])[:, None, None]   # x 10..30, y 20..50
    boxes = crop.mass_boxes(crop.saliency_maps(images.round().to(torch.uint8)))
    expected = torch.tensor([10, 20, 30, 50]) / size
    assert (boxes - expected).abs().max() < 0.06


def test_an_empty_saliency_map_gives_no_box_and_the_whole_image_is_kept():
    flat = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    boxes = crop.mass_boxes(crop.saliency_maps(flat))
    assert torch.isnan(boxes).all()
    assert torch.equal(crop.square_boxes(boxes, 1.2), torch.tensor([[0.5, 0.5, 1.0]]))


def test_squares_are_square_inside_the_image_and_never_smaller_than_min_side():
    boxes = torch.tensor([[0.0, 0.0, 0.2, 0.6], [0.9, 0.9, 0.95, 0.95], [0.1, 0.1, 0.9, 0.9]])
    squares = crop.square_boxes(boxes, 1.5)
    side = squares[:, 2]
    assert torch.allclose(side, torch.tensor([0.9, crop.MIN_SIDE, 1.0]))
    assert (squares[:, :2] - side[:, None] / 2 >= -1e-6).all() and (squares[:, :2] + side[:, None] / 2 <= 1 + 1e-6).all()


def test_crop_of_the_whole_image_is_the_image_and_a_crop_zooms_in():
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    whole = crop.crop_squares(images, torch.tensor([[0.5, 0.5, 1.0]] * 2), 32)
    assert (whole.int() - images.int()).abs().max() <= 1
    quarter = crop.crop_squares(images, torch.tensor([[0.25, 0.25, 0.5]] * 2), 16)
    assert (quarter.int() - images[:, :, :16, :16].int()).abs().max() <= 1


def test_box_crops_centre_the_pot_and_fill_the_frame_more_than_the_whole_image():
    _, shard = _pots(8)
    squares = crop.object_squares(shard, "box", 1.2)
    assert crop.zoom(squares) > 1.05
    cropped = crop.object_images(shard, "box", 1.2, 32)
    assert cropped.shape == (8, 3, 32, 32) and cropped.dtype == torch.uint8
    assert torch.equal(crop.object_images(shard, "none", 1.2, 32), resize_uint8(shard.images, 32))


def test_box_falls_back_to_saliency_for_rows_without_factors_and_for_augmented_copies(capsys):
    _, shard = _pots(4)
    shard.factors[1] = float("nan")
    shard.paths[2] = "p2.png#aug0"
    by_saliency = crop.object_squares(shard, "saliency", 1.2)
    by_box = crop.object_squares(shard, "box", 1.2)
    assert torch.allclose(by_box[1:3], by_saliency[1:3])
    assert not torch.allclose(by_box[0], by_saliency[0])
    photos = Shard(shard.images, shard.labels, shard.classes)          # no factors at all: a crawl of photos
    assert torch.allclose(crop.object_squares(photos, "box", 1.2), by_saliency)
    assert "cropping every image by saliency" in capsys.readouterr().out


def test_a_checkpoint_saved_before_crops_reads_as_whole_images():
    assert crop.crop_of({"image_size": 64}) == ("none", 1.0)
    assert crop.crop_of({"crop": "box", "crop_margin": 1.3}) == ("box", 1.3)


def test_nearest_neighbours_find_copies_and_memorisation_flags_them():
    bank = torch.randint(0, 255, (20, 3, 32, 32), dtype=torch.uint8)
    index, distance = nearest_neighbours(bank[[3, 7]], bank)
    assert index.tolist() == [3, 7] and distance.max() < 1e-6
    generated = bank[[5, 2]].float() / 127.5 - 1                        # a decoder's tanh range
    assert nearest_neighbours(generated, bank)[0].tolist() == [5, 2]
    fresh = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    copied = memorisation(bank[:10], fresh, bank)
    assert copied["nn_distance_ratio"] < 0.01
    assert 0.8 < memorisation(fresh, torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8), bank)["nn_distance_ratio"] < 1.25


def test_labelled_grids_leave_room_for_titles_and_side_by_side_interleaves():
    images = torch.zeros(4, 3, 16, 16)
    plain = image_grid(list(torch.zeros(4, 3, 16, 16, dtype=torch.uint8)), 2, tile=64)
    titled = labelled_grid(images, 2, row_titles=["bowl", "vase"], col_titles=["-1", "+1"], title="t")
    assert titled.width == plain.width + 90 and titled.height == plain.height + 30
    left, right = torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    assert side_by_side(left, right)[:, 0, 0, 0].tolist() == [0, 255, 0, 255]
    picture = recon_picture(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.zeros(4, 3, 16, 16), torch.tensor([0, 1, 0, 1]),
                            ["bowl", "vase"], 2, "recon")
    assert picture.height > 4 * 64


def test_slerp_keeps_its_endpoints_and_a_gaussian_norm():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(64, generator=gen), torch.randn(64, generator=gen)
    path = slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(path[0], a, atol=1e-4) and torch.allclose(path[2], b, atol=1e-4)
    assert abs(path[1].norm() - (a.norm() + b.norm()) / 2) < 0.15 * a.norm()


@pytest.mark.parametrize("mode", ["bogus"])
def test_an_unknown_crop_mode_is_one_clear_error(mode):
    from stages.common.errors import StageError

    _, shard = _pots(2)
    with pytest.raises(StageError, match="allowed: none, box, saliency"):
        crop.object_squares(shard, mode, 1.2)


def test_a_vae_checkpoint_saved_before_crops_loads_and_evaluates_whole_images(tmp_path):
    from stages.common.schema import to_dict
    from stages.families.vae.core import BetaVAE, load_vae
    from stages.families.vae.core.config import VAETrain
    from stages.shared.checkpoint import save_checkpoint

    cfg = VAETrain(image_size=32, latent_dim=4, widths=[8, 16], coarse_size=0, crop="box", crop_margin=1.3)
    old_config = {k: v for k, v in to_dict(cfg).items() if k not in ("crop", "crop_margin")}
    save_checkpoint(tmp_path / "model.pt", {"config": old_config, "model": BetaVAE(cfg).state_dict(),
                                            "classes": ["bowl", "vase"], "epoch": 1})
    model, ckpt = load_vae(tmp_path / "model.pt", "cpu")
    assert crop.crop_of(ckpt["config"]) == ("none", 1.0)
    assert model.decode(torch.zeros(1, 4)).shape == (1, 3, 32, 32)
