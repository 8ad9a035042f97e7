"""Decide whether downloaded bytes are an image kiln keeps, and in what form.

Decoding is the only thing done to a download (never executed, never rendered):
the header is read first and the pixel count checked before any pixel is decoded
(decompression-bomb guard), then the whole image is decoded so truncated files fail.
An RGB JPEG, PNG or WebP is kept byte for byte; anything else is re-encoded as an RGB
PNG that keeps the ground truth the file carried (stages/shared/pngmeta.py).
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from stages.common.io import sha256_bytes
from stages.shared.pngmeta import fields_from_text, kiln_pnginfo, truth_from_info

# Content types kiln understands -> the Pillow format the bytes must decode as.
TYPE_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP",
                "image/gif": "GIF", "image/bmp": "BMP", "image/tiff": "TIFF"}
KEPT_AS_IS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # RGB files in these stay byte-exact


class Rejected(ValueError):
    """Bytes kiln does not keep; the message is the failure-log reason."""


@dataclass(frozen=True)
class Limits:
    allowed_types: tuple[str, ...]
    max_pixels: int
    min_side: int


@dataclass(frozen=True)
class Kept:
    data: bytes          # what lands in data/raw (original bytes, or RGB re-encoded as PNG)
    ext: str
    sha256: str          # of ``data``
    width: int
    height: int
    fields: list[float] | None
    truth: dict | None   # {kind, junk, factors}: the demo's ground truth inside the file


def content_type_ok(header: str | None, limits: Limits) -> str:
    """The bare media type if allowed, else raise Rejected."""
    media = (header or "").split(";")[0].strip().lower()
    if media not in limits.allowed_types:
        raise Rejected(f"content type {media or '(none)'!r} not allowed")
    return media


def _open_checked(body: bytes, limits: Limits) -> Image.Image:
    allowed_formats = {TYPE_FORMATS[t] for t in limits.allowed_types if t in TYPE_FORMATS}
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(body))   # reads the header only
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
            raise Rejected(f"decompression bomb: {err}") from None
        except Exception as err:  # noqa: BLE001 - any decoder failure is a rejection
            raise Rejected(f"not a decodable image: {type(err).__name__}") from None
    if image.format not in allowed_formats:
        raise Rejected(f"decoded format {image.format} not allowed")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise Rejected(f"too many pixels: {width}x{height} > {limits.max_pixels}")
    if min(width, height) < limits.min_side:
        raise Rejected(f"too small: {width}x{height} < {limits.min_side} px")
    return image


def check_image(body: bytes, limits: Limits) -> Kept:
    """Validate and normalise one download; raise Rejected with the reason."""
    image = _open_checked(body, limits)
    try:
        image.load()   # full decode: truncated or corrupt data fails here
    except Exception as err:  # noqa: BLE001
        raise Rejected(f"corrupt image data: {err}") from None
    fields, truth = fields_from_text(image.info), truth_from_info(image.info)
    if image.mode == "RGB" and image.format in KEPT_AS_IS:
        data, ext = body, KEPT_AS_IS[image.format]
    else:   # palette, alpha, grey, CMYK, 16-bit, GIF/BMP/TIFF: store as RGB PNG
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG", pnginfo=kiln_pnginfo(fields, truth))
        data, ext = out.getvalue(), "png"
    return Kept(data, ext, sha256_bytes(data), image.width, image.height, fields, truth)
