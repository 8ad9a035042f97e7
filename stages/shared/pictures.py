"""Pictures a person looks at: captioned image grids, written atomically as PNG; plain
tiled grids and animated GIFs of generated images (uint8, or float in [-1, 1] from a tanh);
2-D scatter plots (matplotlib)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from stages.common.io import atomic_path


def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()


def to_pil(image: torch.Tensor | np.ndarray) -> Image.Image:
    """uint8 (3,H,W) tensor or (H,W,3) array -> PIL RGB."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype != torch.uint8:
            image = image.clamp(0, 1).mul(255).round().to(torch.uint8)
        image = image.permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(image), "RGB")


def image_grid(images: Sequence, ncol: int, *, captions: Sequence[str] | None = None,
               tile: int = 96, pad: int = 4, caption_lines: int = 1,
               row_titles: Sequence[str] | None = None, col_titles: Sequence[str] | None = None,
               title: str | None = None) -> Image.Image:
    """Tiles (upscaled to ``tile`` px) in rows of ``ncol``, with optional captions, row titles,
    column titles (a header line above the first row) and a title line above everything."""
    font = _font()
    caption_h = (14 * caption_lines + 2) if captions else 0
    title_w = 90 if row_titles else 0
    top = (16 if title else 0) + (14 if col_titles else 0)
    nrow = max(1, -(-len(images) // ncol))
    width = title_w + ncol * (tile + pad) + pad
    height = top + nrow * (tile + caption_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=(0, 0, 0), font=font)
    for col, text in enumerate(col_titles or []):
        draw.text((title_w + pad + col * (tile + pad), top - 14), text, fill=(0, 0, 0), font=font)
    for i, image in enumerate(images):
        row, col = divmod(i, ncol)
        x = title_w + pad + col * (tile + pad)
        y = top + pad + row * (tile + caption_h + pad)
        canvas.paste(to_pil(image).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        if captions:
            draw.multiline_text((x, y + tile + 1), captions[i], fill=(0, 0, 0), font=font, spacing=1)
    for row, text in enumerate(row_titles or []):
        draw.text((pad, top + pad + row * (tile + caption_h + pad) + tile // 2 - 6), text, fill=(0, 0, 0), font=font)
    return canvas


def labelled_grid(images: torch.Tensor, ncol: int, *, tile: int = 0, **labels) -> Image.Image:
    """image_grid of generated images (uint8, or float in [-1, 1]) at ``tile`` px (0: their own
    size, at least 64); ``labels``: image_grid's captions, row_titles, col_titles, title, caption_lines."""
    uint8 = to_uint8(images)
    return image_grid(list(uint8), ncol, tile=tile or max(64, uint8.shape[-1]), **labels)


def side_by_side(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Interleave two equally long image batches: left[0], right[0], left[1], ... (2N, 3, H, W) uint8."""
    pairs = torch.stack([to_uint8(left), to_uint8(right)], dim=1)      # (N, 2, 3, H, W)
    return pairs.flatten(0, 1)


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


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
