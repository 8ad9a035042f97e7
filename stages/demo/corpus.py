"""The demo corpus as a list of items, each rendered independently (any order, any process).

An ``Item`` names what to render; ``render_item`` turns it into the file's bytes and
its ground-truth row. Every random choice comes from a generator seeded with
``[seed, class_index, i, kind_code]``, so results do not depend on the order of
rendering or on the number of worker processes.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image, PngImagePlugin

from stages.demo import shapes
from stages.demo.render import render_pot

FIELDS_CHUNK = "kiln.fields"  # PNG text chunk: the fields travel with a crawled image


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


def plan_items(classes: list[str], seed: int, size: int, n_pots: int,
               n_distractors: int, n_junk: int) -> list[Item]:
    """Every item of the corpus, class by class: pots, then distractors, then junk."""
    items = []
    for cls in classes:
        for kind, count in (("pot", n_pots), ("distractor", n_distractors), ("junk", n_junk)):
            items += [Item(cls, kind, i, seed, size, n_pots) for i in range(count)]
    return items


def encode_png(image: np.ndarray, fields: np.ndarray | None = None) -> bytes:
    """PNG bytes of an (H, W, 3) or (H, W) uint8 array, with the fields in a text chunk."""
    info = None
    if fields is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(FIELDS_CHUNK, json.dumps([round(float(x), 6) for x in fields]))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", pnginfo=info, compress_level=3)
    return buf.getvalue()


def read_fields_chunk(data: bytes) -> list[float] | None:
    """The fields embedded in a pot PNG, or None when the chunk is absent."""
    with Image.open(io.BytesIO(data)) as img:
        text = img.text.get(FIELDS_CHUNK) if hasattr(img, "text") else None
    return json.loads(text) if text else None


def render_pot_item(item: Item) -> Rendered:
    pot = render_pot(item.seed, item.class_index, item.i, item.size)
    fields = [round(float(x), 6) for x in pot.fields]
    return Rendered(item, "png", encode_png(pot.image, pot.fields), None, fields, pot.factors)


def render_item(item: Item) -> Rendered:
    """Render one item; top-level so a process pool can call it."""
    if item.kind == "pot":
        return render_pot_item(item)
    from stages.demo import junk

    if item.kind == "distractor":
        return junk.render_distractor(item)
    return junk.render_junk(item)
