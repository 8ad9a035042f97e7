"""Image files to uint8 tensors: the one decode every stage and tool uses, so a model sees
at serving time exactly the pixels it was trained on (letterboxed, RGB, ``size`` square)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from stages.common.errors import StageError
from stages.shared.packs import open_image

# What a corrupt, truncated or hostile file raises while decoding.
DECODE_ERRORS = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


def load_rgb(source: str | Path | BinaryIO, size: int) -> np.ndarray:
    """Decode an image to (size, size, 3) uint8, letterboxing to keep the aspect ratio.
    A path may name a pack member (stages.shared.packs) or a plain file."""
    if isinstance(source, (str, Path)):
        with open_image(source) as opened:
            return load_rgb(opened, size)
    with Image.open(source) as img:
        # A JPEG decodes straight from its DCT at 1/2, 1/4 or 1/8 scale (Pillow's draft), kept
        # at least twice the target so the bilinear shrink below still averages: what
        # thumbnail() itself would do, had convert() not decoded the full image first.
        img.draft("RGB", (2 * size, 2 * size))
        img = img.convert("RGB")
        img.thumbnail((size, size), Image.Resampling.BILINEAR)
        canvas = Image.new("RGB", (size, size), _border_colour(img))
        canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.array(canvas)  # writable: torch.from_numpy needs it


def _border_colour(img: Image.Image) -> tuple[int, int, int]:
    """Median colour of the outermost pixels: padding that blends into the background."""
    arr = np.asarray(img)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return tuple(int(v) for v in np.median(border, axis=0))


def load_images(paths: list[str | Path], size: int, *, on_error: Literal["raise", "zeros"] = "raise",
                threads: int = 2) -> torch.Tensor:
    """uint8 (N, 3, size, size). A file that will not decode stops with a StageError naming it
    (``raise``) or becomes a black image (``zeros``: scoring many crawled files, one bad
    file must not stop the rest). Decoded on ``threads`` threads (PIL releases the GIL)."""
    def one(path):
        try:
            return load_rgb(path, size)
        except FileNotFoundError:
            if on_error == "zeros":
                return np.zeros((size, size, 3), dtype=np.uint8)
            raise StageError(f"{path}: no such image file") from None
        except DECODE_ERRORS as err:
            if on_error == "zeros":
                return np.zeros((size, size, 3), dtype=np.uint8)
            raise StageError(f"{path}: cannot decode image ({err.__class__.__name__})") from None

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        arrays = list(pool.map(one, paths))
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), dtype=np.uint8)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()
