"""A tiny stand-in for the demo renderer, for the generative tests and benchmarks.

Pots are silhouettes of a revolved profile: half-width w(t) over height t in [0, 1], with a
belly, a neck and a rim. Bowls are short and wide, vases tall with a narrow neck. Every image
comes with its 23x3 fields vector (control points of the profile) and its ground-truth
factors (height, belly, neck, hue, shift), like the real demo shards.
"""
from __future__ import annotations

import colorsys

import torch

from stages.shared.shards import Shard, save_shard

FACTOR_NAMES = ["height", "belly", "neck", "hue", "shift"]


def _profile(t: torch.Tensor, belly: float, neck: float, is_vase: bool) -> torch.Tensor:
    """Half-width (fraction of the image) at heights t in [0, 1] (0 = foot, 1 = rim)."""
    if is_vase:   # widest at 35 % of the height, narrowing to the neck, flaring at the rim
        body = belly * torch.exp(-((t - 0.35) / 0.3) ** 2)
        return torch.maximum(body, neck + 0.08 * torch.clamp(t - 0.85, min=0) / 0.15)
    return 0.12 + (belly - 0.12) * torch.sqrt(t.clamp(0, 1))   # bowl: opens towards the rim


def render(size: int, is_vase: bool, height: float, belly: float, neck: float, hue: float,
           shift: float, background: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One pot: uint8 image (3, size, size) and its fields (69,) = 23 x (type, x, y)."""
    ys = torch.linspace(0, 1, size).view(size, 1)    # image rows, top = 0
    xs = torch.linspace(-0.5, 0.5, size).view(1, size)
    foot, top = 0.9, 0.9 - height
    t = ((foot - ys) / height).clamp(-1, 2)           # (size, 1) height along the pot
    half = _profile(t.clamp(0, 1), belly, neck, is_vase) * 0.5
    inside = (t >= 0) & (t <= 1) & ((xs - shift).abs() <= half)   # (size, size)
    shade = 0.55 + 0.45 * torch.cos((xs - shift) / half.clamp_min(1e-3) * 1.3).clamp(0, 1)
    rgb = torch.tensor(colorsys.hsv_to_rgb(hue, 0.7, 0.9)).view(3, 1, 1)
    image = torch.where(inside, rgb * shade, torch.full((3, 1, 1), background))
    knots = torch.linspace(0, 1, 16)
    profile = torch.stack([torch.ones(16), _profile(knots, belly, neck, is_vase), top + height * (1 - knots)], 1)
    guide = torch.stack([torch.zeros(7), torch.full((7,), shift), torch.linspace(top, foot, 7)], 1)
    fields = torch.cat([guide, profile]).flatten()   # (23 * 3,)
    return (image * 255).round().to(torch.uint8), fields


def make_shard(n: int, size: int = 32, seed: int = 0) -> Shard:
    """n pots, half bowls (label 0) and half vases (label 1)."""
    gen = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=gen))   # noqa: E731
    images, fields, factors, labels = [], [], [], []
    for i in range(n):
        is_vase = i % 2 == 1
        draw = dict(height=u(0.55, 0.8) if is_vase else u(0.3, 0.45), belly=u(0.45, 0.7),
                    neck=u(0.12, 0.22), hue=u(0.0, 1.0), shift=u(-0.12, 0.12))
        image, field = render(size, is_vase, background=u(0.1, 0.9), **draw)
        images.append(image), fields.append(field), labels.append(int(is_vase))
        factors.append(torch.tensor([draw[name] for name in FACTOR_NAMES]))
    return Shard(torch.stack(images), torch.tensor(labels), ["bowl", "vase"],
                 [f"{i:064x}" for i in range(n)], [f"toy/{i}.png" for i in range(n)],
                 torch.stack(fields).float(), torch.stack(factors).float(), list(FACTOR_NAMES))


def write_shards(root, n_train: int = 64, n_test: int = 32, size: int = 32) -> dict:
    """train/val/test shards under ``root``; returns their paths."""
    paths = {"train": root / "train.pt", "val": root / "val.pt", "test": root / "test.pt"}
    for seed, (split, n) in enumerate((("train", n_train), ("val", n_test), ("test", n_test))):
        save_shard(paths[split], make_shard(n, size, seed))
    return paths
