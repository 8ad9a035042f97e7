"""What the demo renders: an ``Item`` to draw and the ``Rendered`` bytes and truth it becomes.

Every file carries its own ground truth (``stages.shared.pngmeta``): the crawl reads it
back from the bytes it downloads, so the filter and split need no join with index.jsonl.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from stages.demo import shapes
from stages.demo.render import render_pot
from stages.shared.pngmeta import kiln_pnginfo, truth_jpeg_comment


@dataclass(frozen=True)
class Item:
    cls: str          # the query class the item is served under
    kind: str         # pot | distractor | junk
    i: int            # index within (class, kind)
    seed: int
    size: int
    n_pots: int       # pots per class (junk duplicates pick one of them)

    @property
    def class_index(self) -> int:
        return shapes.CLASSES.index(self.cls)

    @property
    def stem(self) -> str:
        return f"{self.cls}-{self.kind}-{self.i:05d}"


@dataclass
class Rendered:
    item: Item
    ext: str          # file extension without the dot
    data: bytes       # the file's bytes
    junk: str | None
    fields: list | None
    factors: dict | None

    @property
    def name(self) -> str:
        return f"{self.item.stem}.{self.ext}"


def truth_of(kind: str, junk: str | None = None, factors: dict | None = None) -> dict:
    """The ground truth a file carries (``kiln.truth``): what index.jsonl says of it."""
    return {"kind": kind, "junk": junk, "factors": factors}


def encode_png(image: np.ndarray, fields: np.ndarray | None = None, truth: dict | None = None) -> bytes:
    """PNG bytes of an (H, W, 3) or (H, W) uint8 array, fields and truth in text chunks."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", pnginfo=kiln_pnginfo(fields, truth), compress_level=3)
    return buf.getvalue()


def encode(image: np.ndarray | Image.Image, fmt: str, truth: dict | None = None, **options) -> bytes:
    """PNG or JPEG bytes (Pillow's defaults plus ``options``), the truth in a text chunk
    or a JPEG comment: either leaves every other byte of the file as it was."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    if truth is not None and fmt == "PNG":
        options["pnginfo"] = kiln_pnginfo(truth=truth)
    elif truth is not None and fmt == "JPEG":
        options["comment"] = truth_jpeg_comment(truth)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def render_pot_item(item: Item) -> Rendered:
    pot = render_pot(item.seed, item.class_index, item.i, item.size)
    fields = [round(float(x), 6) for x in pot.fields]
    data = encode_png(pot.image, pot.fields, truth_of("pot", factors=pot.factors))
    return Rendered(item, "png", data, None, fields, pot.factors)
