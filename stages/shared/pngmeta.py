"""Ground truth that travels inside an image file, so no stage needs a join on ids.

The demo writes a pot's fields into the PNG text chunk ``kiln.fields`` and every item's
ground truth (kind, junk type, a pot's generative factors) into ``kiln.truth``; a JPEG
carries the truth in a comment segment (``kiln.truth=<json>``), as JPEG has no text
chunks. The crawl reads both back from whatever it downloaded into the manifest rows.
Adding a chunk or comment changes nothing else in the file: the pixels and the rest of
the bytes stay as they were.
"""
from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

from stages.shared.demo_labels import ITEM_KINDS, JUNK_TYPES

FIELDS_CHUNK = "kiln.fields"
TRUTH_CHUNK = "kiln.truth"
TRUTH_COMMENT = TRUTH_CHUNK.encode() + b"="   # prefix of the JPEG comment


def _rounded(fields) -> list[float]:
    return [round(float(x), 6) for x in fields]


def kiln_pnginfo(fields=None, truth: dict | None = None) -> PngImagePlugin.PngInfo | None:
    """PNG text chunks holding ``fields`` (rounded to 6 digits, as manifests keep them) and
    ``truth``; None when there is nothing to write."""
    if fields is None and truth is None:
        return None
    info = PngImagePlugin.PngInfo()
    if fields is not None:
        info.add_text(FIELDS_CHUNK, json.dumps(_rounded(fields)))
    if truth is not None:
        info.add_text(TRUTH_CHUNK, json.dumps(truth))
    return info


def truth_jpeg_comment(truth: dict) -> bytes:
    """The JPEG comment (Pillow's ``comment=`` save option) that carries ``truth``."""
    return TRUTH_COMMENT + json.dumps(truth).encode()


def fields_from_text(text_chunks: dict) -> list[float] | None:
    """The fields in a decoded PNG's text chunks (``Image.text``); None when absent or malformed."""
    text = text_chunks.get(FIELDS_CHUNK)
    if not isinstance(text, str):
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(values, list) and all(_is_number(v) for v in values):
        return [float(v) for v in values]
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _truth_text(info: dict) -> str | None:
    """The truth JSON of a PNG text chunk or a JPEG comment (``Image.info``)."""
    text = info.get(TRUTH_CHUNK)
    if isinstance(text, str):
        return text
    comment = info.get("comment")
    if isinstance(comment, bytes) and comment.startswith(TRUTH_COMMENT):
        return comment[len(TRUTH_COMMENT):].decode("utf-8", "replace")
    return None


def truth_from_info(info: dict) -> dict | None:
    """``{kind, junk, factors}`` from a decoded image's ``info``; None when absent or malformed
    (a file from anywhere may carry anything: only the demo's own vocabulary is believed)."""
    text = _truth_text(info)
    if text is None:
        return None
    try:
        truth = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(truth, dict) or truth.get("kind") not in ITEM_KINDS:
        return None
    junk, factors = truth.get("junk"), truth.get("factors")
    if junk is not None and junk not in JUNK_TYPES:
        return None
    if factors is not None and not (isinstance(factors, dict) and all(map(_is_number, factors.values()))):
        return None
    return {"kind": truth["kind"], "junk": junk,
            "factors": None if factors is None else {str(k): float(v) for k, v in factors.items()}}


def read_fields_chunk(data: bytes) -> list[float] | None:
    """The fields embedded in PNG bytes, or None."""
    with Image.open(io.BytesIO(data)) as img:
        return fields_from_text(getattr(img, "text", {}) or {})


def read_truth_chunk(data: bytes) -> dict | None:
    """The ground truth embedded in PNG or JPEG bytes, or None."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()   # a PNG's text chunks after the pixels are read only here
        return truth_from_info(img.info)
