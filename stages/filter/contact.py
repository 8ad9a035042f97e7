"""Contact sheets: a grid of thumbnails with captions that a person can skim."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from stages.common.io import atomic_path
from stages.shared.packs import open_image

CAPTION_PX = 12


def _tile(path: str, tile: int) -> Image.Image:
    """The image letterboxed into a tile; an undecodable file becomes a grey 'unreadable' tile."""
    canvas = Image.new("RGB", (tile, tile), (40, 40, 40))
    try:
        with open_image(path) as opened, Image.open(opened) as img:
            img = img.convert("RGB")
            img.thumbnail((tile, tile))
            canvas.paste(img, ((tile - img.width) // 2, (tile - img.height) // 2))
    except (OSError, ValueError):
        ImageDraw.Draw(canvas).text((4, tile // 2 - 6), "unreadable", fill=(255, 120, 120))
    return canvas


def contact_sheet(paths: list[str], captions: list[str], tile: int = 96, columns: int = 8) -> Image.Image:
    """(rows x columns) grid of ``tile``-pixel thumbnails, each with a one-line caption below."""
    columns = max(1, min(columns, len(paths)))
    rows = max(1, -(-len(paths) // columns))
    cell_h = tile + CAPTION_PX + 2
    sheet = Image.new("RGB", (columns * tile, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (path, caption) in enumerate(zip(paths, captions)):
        x, y = (k % columns) * tile, (k // columns) * cell_h
        sheet.paste(_tile(path, tile), (x, y))
        draw.text((x + 2, y + tile + 1), caption[: tile // 6], fill=(0, 0, 0))
    return sheet


def note_sheet(text: str, width: int = 192) -> Image.Image:
    """A one-line picture: what a sheet folder holds when there is nothing to show."""
    sheet = Image.new("RGB", (width, CAPTION_PX + 8), (255, 255, 255))
    ImageDraw.Draw(sheet).text((4, 4), text, fill=(0, 0, 0))
    return sheet


def save_sheet(path: str | Path, sheet: Image.Image) -> None:

    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
