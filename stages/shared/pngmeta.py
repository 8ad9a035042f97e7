"""Ground truth that travels inside a PNG: the demo writes a pot's fields into a text chunk,
the crawl reads them back from whatever it downloaded, so no stage needs a join on ids."""
from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

FIELDS_CHUNK = "kiln.fields"


def fields_pnginfo(fields) -> PngImagePlugin.PngInfo:
    """A PNG text chunk holding ``fields`` (rounded to 6 digits, as the manifests keep them)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(FIELDS_CHUNK, json.dumps([round(float(x), 6) for x in fields]))
    return info


def fields_from_text(text_chunks: dict) -> list[float] | None:
    """The fields in a decoded PNG's text chunks (``Image.text``); None when absent or malformed."""
    text = text_chunks.get(FIELDS_CHUNK)
    if not isinstance(text, str):
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values]
    return None


def read_fields_chunk(data: bytes) -> list[float] | None:
    """The fields embedded in PNG bytes, or None."""
    with Image.open(io.BytesIO(data)) as img:
        return fields_from_text(getattr(img, "text", {}) or {})
