"""Object-centred crops for the generative families (``crop: none | box | saliency``).

On the demo the grounds (solid, gradient or noise, in any colour) cover most pixels, and a
small generative model spends its capacity there: the VAE's latents encoded the ground and
the autoencoder's clusters followed ground colour. Cropping every image to a square around
its object, before resizing to the family's ``image_size``, gives the pot the pixels.

- ``box``: the object's box from the ground-truth factors the demo renderer records
  (centre ``x``, ``y``, ``scale``, the pot's widths and height, ``view_elevation``,
  ``rotation``); rows without them (a kept distractor, real photos) fall back to saliency,
  so the shipped default also runs on a crawl of real photos.
- ``saliency``: no labels and no trained model. The ground is modelled as a planar colour
  field fitted to the image's border ring (a solid or gradient ground fits exactly, a noisy one
  leaves its noise level); pixels that differ from it by more than the border's own residuals
  are the object, and the box holds ``SALIENT_MASS`` of that difference. A product photo or a
  museum shot on a plain backdrop is what this suits; a cluttered photo gets a looser box.

The crop is square (the object keeps its aspect ratio), ``margin`` times the box's longer side,
shifted to stay inside the image. Evaluation applies the same crop to the held-out images, so
FID compares generated crops with real crops.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stages.common.errors import StageError
from stages.families._shared.gen import resize_uint8
from stages.shared.shards import Shard

CROP_MODES = ("none", "box", "saliency")
BOX_FACTORS = ("x", "y", "scale", "width", "height", "foot_width", "rim_width", "belly_width", "belly_height",
               "view_elevation", "rotation")
SALIENT_MASS = 0.96       # share of the saliency the box holds (drops stray specks)
AUGMENTED_MARK = "#aug"   # stages.augment's suffix on the path of an augmented copy
MIN_SIDE = 0.25           # smallest crop side, a fraction of the image: never zoom past 4x


def factor_boxes(factors: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Boxes (N, 4) [x0, y0, x1, y1] as image fractions from the demo's factors; NaN rows when unknown.

    Mirrors stages.demo.render.place: the profile seen at view_elevation e spans
    v in [min(-r_foot sin e, v_belly - r_belly sin e), max(h cos e + r_rim sin e, v_belly + r_belly sin e)]
    and u in [-width/2, width/2]; that rectangle is rotated by ``rotation`` degrees and scaled
    by ``scale`` image fractions per object unit around the centre (x, y).
    """
    missing = [name for name in BOX_FACTORS if name not in names]
    if missing:
        return torch.full((len(factors), 4), float("nan"))
    f = {name: factors[:, names.index(name)].double() for name in BOX_FACTORS}
    sin_e, cos_e = f["view_elevation"].sin(), f["view_elevation"].cos()
    belly_v = f["belly_height"] * f["height"] * cos_e
    v_lo = torch.minimum(-f["foot_width"] / 2 * sin_e, belly_v - f["belly_width"] / 2 * sin_e)
    v_hi = torch.maximum(f["height"] * cos_e + f["rim_width"] / 2 * sin_e, belly_v + f["belly_width"] / 2 * sin_e)
    angle = torch.deg2rad(f["rotation"])
    c, s = angle.cos().abs(), angle.sin().abs()
    span_u, span_v = f["width"], v_hi - v_lo
    half_w = (c * span_u + s * span_v) * f["scale"] / 2         # the rotated rectangle's box
    half_h = (s * span_u + c * span_v) * f["scale"] / 2
    x, y = f["x"], f["y"]
    return torch.stack([x - half_w, y - half_h, x + half_w, y + half_h], dim=1).float()


def _border_ring(size: int) -> torch.Tensor:
    ring = max(2, size // 16)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[:ring], mask[-ring:], mask[:, :ring], mask[:, -ring:] = True, True, True, True
    return mask


def saliency_maps(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> (N, S, S) >= 0: how far each pixel is from the fitted ground.

    The ground is c(u, v) = a + b u + c v per channel, fitted by least squares to the border
    ring; what the border itself deviates from it (its 90th percentile) is the noise level
    subtracted, so a noise ground does not light up everywhere.
    """
    n, size = len(images), images.shape[-1]
    x = images.float().div(255).flatten(2).transpose(1, 2)          # (N, S*S, 3)
    axis = torch.linspace(-1, 1, size)
    v, u = torch.meshgrid(axis, axis, indexing="ij")
    design = torch.stack([torch.ones(size * size), u.flatten(), v.flatten()], dim=1)   # (S*S, 3)
    border = _border_ring(size).flatten()
    coef = torch.linalg.pinv(design[border]) @ x[:, border]         # (N, 3, 3)
    residual = (x - design @ coef).norm(dim=2)                      # (N, S*S)
    noise = residual[:, border].quantile(0.9, dim=1, keepdim=True)
    excess = (residual - noise).clamp_min(0).view(n, 1, size, size)
    return F.avg_pool2d(excess, 3, stride=1, padding=1, count_include_pad=False)[:, 0]


def mass_boxes(maps: torch.Tensor, mass: float = SALIENT_MASS) -> torch.Tensor:
    """(N, H, W) non-negative maps -> boxes (N, 4) fractions holding ``mass`` of each map's sum
    (the central interval of its x and y marginals); NaN rows for an empty map."""
    _, height, width = maps.shape
    tail = (1 - mass) / 2
    out = []
    for marginal, length in ((maps.sum(1), width), (maps.sum(2), height)):   # x, then y
        cumulative = marginal.cumsum(1) / marginal.sum(1, keepdim=True).clamp_min(1e-12)
        lo = (cumulative < tail).sum(1).float()
        hi = (cumulative < 1 - tail).sum(1).float() + 1
        out.append((lo / length, hi / length))
    (x0, x1), (y0, y1) = out
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    empty = maps.flatten(1).sum(1) <= 1e-6
    boxes[empty] = float("nan")
    return boxes


def square_boxes(boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """(N, 4) boxes -> (N, 3) squares [centre x, centre y, side] inside the unit image.

    The side is ``margin`` x the longer box side, at least MIN_SIDE and at most the image;
    the centre moves inwards rather than let the crop leave the image. NaN boxes: the whole image.
    """
    known = ~torch.isnan(boxes).any(dim=1)
    boxes = torch.where(known[:, None], boxes, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    side = ((boxes[:, 2:] - boxes[:, :2]).amax(1) * margin).clamp(MIN_SIDE, 1.0)
    side = torch.where(known, side, torch.ones_like(side))
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    centre = torch.maximum(torch.minimum(centre, 1 - side[:, None] / 2), side[:, None] / 2)
    return torch.cat([centre, side[:, None]], dim=1)


def crop_squares(images: torch.Tensor, squares: torch.Tensor, size: int, batch: int = 256) -> torch.Tensor:
    """uint8 (N, 3, H, W) and (N, 3) squares -> uint8 (N, 3, size, size).

    Sampled bilinearly at a whole multiple of ``size`` no coarser than the crops' source
    pixels, then resized down with antialiasing, so a large photo is not aliased by the crop.
    """
    out = []
    for start in range(0, len(images), batch):
        part, sq = images[start:start + batch].float(), squares[start:start + batch]
        sample = size * max(1, math.ceil(float(sq[:, 2].max()) * images.shape[-1] / size - 1e-6))
        theta = torch.zeros(len(part), 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = sq[:, 2]                  # output [-1, 1] -> the square
        theta[:, :, 2] = sq[:, :2] * 2 - 1
        grid = F.affine_grid(theta, [len(part), 3, sample, sample], align_corners=False)
        sampled = F.grid_sample(part, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out.append(resize_uint8(sampled.round().clamp(0, 255).to(torch.uint8), size))
    return torch.cat(out) if out else images.new_zeros((0, 3, size, size))


def object_squares(shard: Shard, mode: str, margin: float) -> torch.Tensor:
    """(N, 3) crop squares for every image of ``shard`` under ``mode``."""
    if mode not in CROP_MODES:
        raise StageError(f"crop mode {mode!r} unknown; allowed: {', '.join(CROP_MODES)}")
    boxes = torch.full((len(shard), 4), float("nan"))
    if mode == "box":
        boxes = factor_boxes(shard.factors, list(shard.factor_names))
        if len(boxes) and torch.isnan(boxes).all():
            print(f"crop: box: no image carries the demo's box factors ({', '.join(BOX_FACTORS)}); "
                  "cropping every image by saliency")
        # an offline-augmented copy (stages.augment names it <path>#aug<i>) moved its pot: its factors' box is stale
        moved = torch.tensor([AUGMENTED_MARK in path for path in shard.paths] or [False] * len(shard), dtype=torch.bool)
        boxes[moved] = float("nan")
    unknown = torch.isnan(boxes).any(dim=1)
    if mode != "none" and unknown.any():
        boxes[unknown] = mass_boxes(saliency_maps(shard.images[unknown]))
    return square_boxes(boxes, margin)


def object_images(shard: Shard, mode: str, margin: float, size: int) -> torch.Tensor:
    """The shard's images cropped to their objects (``mode``) and resized: uint8 (N, 3, size, size)."""
    if mode == "none":
        return resize_uint8(shard.images, size)
    return crop_squares(shard.images, object_squares(shard, mode, margin), size)


def crop_of(config: dict) -> tuple[str, float]:
    """(mode, margin) a checkpoint's config trained with; one saved before cropping existed: none."""
    return str(config.get("crop", "none")), float(config.get("crop_margin", 1.0))


def zoom(squares: torch.Tensor) -> float:
    """Mean linear magnification of the crops (1: whole images), for the stage's summary line."""
    return float((1 / squares[:, 2]).mean()) if len(squares) else math.nan
