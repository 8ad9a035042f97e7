"""Pictures a person opens: image grids and GIFs (PIL) and 2-D scatter plots (matplotlib).

Images come in as uint8 (N, 3, H, W) or float in [-1, 1] (the generators' tanh range);
every file is written atomically through ``stages.io``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from stages.io import atomic_path


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 or float in [-1, 1] -> uint8 on the CPU."""
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        return images
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid_image(images: torch.Tensor, nrow: int, padding: int = 2) -> Image.Image:
    """Tile (N, 3, H, W) images into one PIL picture, ``nrow`` images per row."""
    grid = make_grid(to_uint8(images), nrow=max(1, nrow), padding=padding, pad_value=255)
    return Image.fromarray(grid.permute(1, 2, 0).numpy())   # (H', W', 3)


def save_png(picture: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> Path:
    return save_png(grid_image(images, nrow), path)


def save_gif(frames: Sequence[Image.Image], path: str | Path, frame_ms: int = 120) -> Path:
    """An endlessly looping animated GIF of equally sized frames."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    path = Path(path)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=list(frames[1:]),
                       duration=frame_ms, loop=0)
    return path


def scatter_plot(points: np.ndarray, groups: np.ndarray, names: Sequence[str], path: str | Path,
                 title: str, extra_points: np.ndarray | None = None) -> Path:
    """2-D scatter of ``points`` (N, 2) coloured by integer ``groups``; ``extra_points`` as crosses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=100)
    for index, name in enumerate(names):
        chosen = groups == index
        ax.scatter(points[chosen, 0], points[chosen, 1], s=8, alpha=0.7, label=f"{name} ({chosen.sum()})")
    if extra_points is not None:
        ax.scatter(extra_points[:, 0], extra_points[:, 1], marker="x", s=80, c="black", label="centres")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
