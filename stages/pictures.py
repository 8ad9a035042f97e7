"""Pictures a person looks at: captioned image grids, written atomically as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from stages.io import atomic_path


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
               row_titles: Sequence[str] | None = None) -> Image.Image:
    """Tiles (upscaled to ``tile`` px) in rows of ``ncol``, with optional captions and row titles."""
    font = _font()
    caption_h = (14 * caption_lines + 2) if captions else 0
    title_w = 90 if row_titles else 0
    nrow = max(1, -(-len(images) // ncol))
    width = title_w + ncol * (tile + pad) + pad
    height = nrow * (tile + caption_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, image in enumerate(images):
        row, col = divmod(i, ncol)
        x = title_w + pad + col * (tile + pad)
        y = pad + row * (tile + caption_h + pad)
        canvas.paste(to_pil(image).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        if captions:
            draw.multiline_text((x, y + tile + 1), captions[i], fill=(0, 0, 0), font=font, spacing=1)
    for row, title in enumerate(row_titles or []):
        draw.text((pad, pad + row * (tile + caption_h + pad) + tile // 2 - 6), title, fill=(0, 0, 0), font=font)
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
