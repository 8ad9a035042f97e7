"""Online augmentation of a whole batch at once, each image with its own random draw.

Per-image torchvision transforms cost ~2 ms an image in Python overhead; here
crop, rotation and flips fold into one affine matrix per image, elastic
distortion adds a smoothed displacement field, and a single ``grid_sample``
resamples the batch (on the GPU when there is one). Same params as the
offline ops (``augment.online``), same meaning as torchvision's. The ops' settings
(``AugmentOps``) live here because the augment stage and the training families both read them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from stages.common.schema import PROBABILITY, ParamsError, bounds


# A key whose shipped value differs between ``augment.offline`` and ``augment.online`` (or
# between hflip and vflip) has no default: one class cannot default to both, and a silent
# fallback to the other mapping's value would change what runs, so leaving it out of
# params.yaml stops with "is required". Every other key defaults to the value params.yaml ships;
# OnlineOps here and stages.augment.config.OfflineOps give each block its shipped value.
@dataclass(kw_only=True)
class Elastic:
    p: float = field(metadata=PROBABILITY)                  # offline 0.3, online 0.0
    alpha: float = field(default=20.0, metadata=bounds(ge=0))
    sigma: float = field(default=4.0, metadata=bounds(gt=0))


@dataclass(kw_only=True)
class Flip:
    p: float = field(metadata=PROBABILITY)                  # as torchvision's; hflip 0.5, vflip 0.0


@dataclass(kw_only=True)
class Crop:
    p: float = field(metadata=PROBABILITY)                  # offline 0.5, online 0.3
    scale: list[float]                                      # offline [0.75, 1.0], online [0.8, 1.0]
    ratio: list[float] = field(default_factory=lambda: [0.8, 1.25])

    def validate(self, path: str) -> None:
        for name, pair in (("scale", self.scale), ("ratio", self.ratio)):
            if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
                raise ParamsError(f"{path}.{name}", f"must be [low, high] with 0 < low <= high (got {pair})")
        if self.scale[1] > 1:
            raise ParamsError(f"{path}.scale", f"high must be <= 1 (got {self.scale[1]})")


@dataclass(kw_only=True)
class Erasing:
    p: float = field(metadata=PROBABILITY)                  # offline 0.25, online 0.0
    scale: list[float] = field(default_factory=lambda: [0.02, 0.15])

    def validate(self, path: str) -> None:
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ParamsError(f"{path}.scale", f"must be [low, high] within (0, 1] (got {self.scale})")


@dataclass(kw_only=True)
class Rotation:
    p: float = field(metadata=PROBABILITY)                  # offline 0.5, online 0.0
    degrees: float = field(default=10.0, metadata=bounds(ge=0, le=180))


@dataclass(kw_only=True)
class AugmentOps:
    """The decathlon DataAugmentor's ops, each with a probability and a magnitude.
    The ops whose shipped settings differ between ``augment.offline`` and ``augment.online``
    are required; the flips ship the same in both."""
    elastic: Elastic
    hflip: Flip = field(default_factory=lambda: Flip(p=0.5))
    vflip: Flip = field(default_factory=lambda: Flip(p=0.0))
    crop: Crop
    erasing: Erasing
    rotation: Rotation


@dataclass(kw_only=True)
class OnlineOps(AugmentOps):
    """``augment.online``, what every training batch gets (train@ and hpo@ read it): a block
    left out of params.yaml takes the shipped setting."""
    elastic: Elastic = field(default_factory=lambda: Elastic(p=0.0))
    crop: Crop = field(default_factory=lambda: Crop(p=0.3, scale=[0.8, 1.0]))
    erasing: Erasing = field(default_factory=lambda: Erasing(p=0.0))
    rotation: Rotation = field(default_factory=lambda: Rotation(p=0.0))


def _chosen(p: float, batch: int, generator, device) -> torch.Tensor:
    return torch.rand(batch, generator=generator).to(device) < p


def _uniform(low: float, high: float, batch: int, generator, device) -> torch.Tensor:
    return (low + (high - low) * torch.rand(batch, generator=generator)).to(device)


def affine_matrices(ops: AugmentOps, batch: int, generator, device) -> torch.Tensor:
    """(B, 2, 3) maps output to input coords in [-1, 1] (affine_grid convention)."""
    sx = torch.ones(batch, device=device)
    sy = torch.ones(batch, device=device)
    tx = torch.zeros(batch, device=device)
    ty = torch.zeros(batch, device=device)
    if ops.crop.p > 0:  # random resized crop: the visible window shrinks to area s, aspect r
        pick = _chosen(ops.crop.p, batch, generator, device)
        area = _uniform(*ops.crop.scale, batch, generator, device)
        log_r = _uniform(math.log(ops.crop.ratio[0]), math.log(ops.crop.ratio[1]), batch, generator, device)
        w = torch.sqrt(area * log_r.exp()).clamp(max=1.0)
        h = torch.sqrt(area / log_r.exp()).clamp(max=1.0)
        sx, sy = torch.where(pick, w, sx), torch.where(pick, h, sy)
        tx = torch.where(pick, (1 - w) * (2 * torch.rand(batch, generator=generator).to(device) - 1), tx)
        ty = torch.where(pick, (1 - h) * (2 * torch.rand(batch, generator=generator).to(device) - 1), ty)
    if ops.hflip.p > 0:
        sx = torch.where(_chosen(ops.hflip.p, batch, generator, device), -sx, sx)
    if ops.vflip.p > 0:
        sy = torch.where(_chosen(ops.vflip.p, batch, generator, device), -sy, sy)
    angle = torch.zeros(batch, device=device)
    if ops.rotation.p > 0:
        pick = _chosen(ops.rotation.p, batch, generator, device)
        degrees = _uniform(-ops.rotation.degrees, ops.rotation.degrees, batch, generator, device)
        angle = torch.where(pick, torch.deg2rad(degrees), angle)
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos * sx, -sin * sy, tx], 1),
                        torch.stack([sin * sx, cos * sy, ty], 1)], 1)


def elastic_offsets(ops: AugmentOps, batch: int, size: tuple[int, int], generator, device) -> torch.Tensor:
    """(B, H, W, 2) smoothed random displacements in grid units; zero where not chosen."""
    h, w = size
    noise = (torch.rand((batch, 2, h, w), generator=generator) * 2 - 1).to(device)
    kernel = int(8 * ops.elastic.sigma + 1) | 1
    smooth = TF.gaussian_blur(noise, [kernel, kernel], [ops.elastic.sigma, ops.elastic.sigma])
    scale = torch.tensor([2.0 / w, 2.0 / h], device=device).view(1, 2, 1, 1)
    offsets = smooth * ops.elastic.alpha * scale                  # pixels -> [-1, 1] grid units
    pick = _chosen(ops.elastic.p, batch, generator, device).view(batch, 1, 1, 1)
    return (offsets * pick).permute(0, 2, 3, 1)


def erase(x: torch.Tensor, ops: AugmentOps, generator) -> torch.Tensor:
    """Random erasing: a rectangle of area in ``scale`` per chosen image, filled with noise."""
    batch, _, h, w = x.shape
    device = x.device
    pick = _chosen(ops.erasing.p, batch, generator, device)
    area = _uniform(*ops.erasing.scale, batch, generator, device) * h * w
    log_r = _uniform(math.log(0.3), math.log(3.3), batch, generator, device)
    eh = torch.sqrt(area / log_r.exp()).clamp(1, h)
    ew = torch.sqrt(area * log_r.exp()).clamp(1, w)
    top = torch.rand(batch, generator=generator).to(device) * (h - eh)
    left = torch.rand(batch, generator=generator).to(device) * (w - ew)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)) & pick.view(-1, 1, 1))
    noise = torch.rand(x.shape, generator=generator).to(device) * 255
    return torch.where(inside.unsqueeze(1), noise, x)


def batch_augment(images: torch.Tensor, ops: AugmentOps, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B,3,H,W) -> augmented uint8 (B,3,H,W), one random draw per image."""
    if not any(getattr(ops, name).p > 0 for name in ("elastic", "hflip", "vflip", "crop", "erasing", "rotation")):
        return images
    batch, _, h, w = images.shape
    device = images.device
    x = images.float()
    grid = F.affine_grid(affine_matrices(ops, batch, generator, device), (batch, 3, h, w), align_corners=False)
    if ops.elastic.p > 0:
        grid = grid + elastic_offsets(ops, batch, (h, w), generator, device)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if ops.erasing.p > 0:
        x = erase(x, ops, generator)
    return x.round_().clamp_(0, 255).to(torch.uint8)
