"""preview.png: one row of pots per class, a row of distractors, a row of junk."""
from __future__ import annotations

import io

from PIL import Image, ImageDraw

from stages.common.io import atomic_path

COLUMNS = 12


def tile(data: bytes, size: int) -> Image.Image:
    """The item letterboxed into a size x size tile; undecodable files get a red cross."""
    canvas = Image.new("RGB", (size, size), (40, 40, 40))
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size), Image.Resampling.BILINEAR)
            canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    except Exception:  # truncated / not an image: the point of junk; PIL raises several types
        draw = ImageDraw.Draw(canvas)
        draw.line((4, 4, size - 5, size - 5), fill=(220, 30, 30), width=3)
        draw.line((4, size - 5, size - 5, 4), fill=(220, 30, 30), width=3)
    return canvas


def preview_rows(rendered, classes: list[str]) -> list[list]:
    """Pots of each class, then distractors (their kinds cycle) and one junk item per junk type."""
    rows = [[r for r in rendered if r.item.kind == "pot" and r.item.cls == cls][:COLUMNS] for cls in classes]
    rows.append([r for r in rendered if r.item.kind == "distractor"][:COLUMNS])
    first_of_type = {}
    for r in rendered:
        if r.item.kind == "junk":
            first_of_type.setdefault(r.junk, r)
    rows.append(list(first_of_type.values())[:COLUMNS])
    return [row for row in rows if row]


def write_preview(path, rendered, classes: list[str], size: int) -> None:
    rows = preview_rows(rendered, classes)
    sheet = Image.new("RGB", (COLUMNS * size, len(rows) * size), (255, 255, 255))
    for y, row in enumerate(rows):
        for x, item in enumerate(row):
            sheet.paste(tile(item.data, size), (x * size, y * size))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
