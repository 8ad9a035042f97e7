"""What the demo renders: an ``Item`` to draw and the ``Rendered`` bytes and truth it becomes."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from stages.demo import shapes
from stages.demo.render import render_pot
from stages.shared.pngmeta import fields_pnginfo


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


def encode_png(image: np.ndarray, fields: np.ndarray | None = None) -> bytes:
    """PNG bytes of an (H, W, 3) or (H, W) uint8 array, with the fields in a text chunk."""
    info = None if fields is None else fields_pnginfo(fields)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", pnginfo=info, compress_level=3)
    return buf.getvalue()


def render_pot_item(item: Item) -> Rendered:
    pot = render_pot(item.seed, item.class_index, item.i, item.size)
    fields = [round(float(x), 6) for x in pot.fields]
    return Rendered(item, "png", encode_png(pot.image, pot.fields), None, fields, pot.factors)
