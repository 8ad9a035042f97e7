"""Distractors and junk: what a real image search returns besides the pots asked for.

Junk types cycle by index (``JUNK_TYPES[i % len(JUNK_TYPES)]``) so they are spread
evenly. Each is what it claims: an exact duplicate is byte-identical to a corpus pot,
a truncated file fails to decode, a not_image file is HTML with a .jpg name, and so on.
Pots that junk is made from (blurry, dark, ...) are not in the corpus: they come from
their own random stream (KIND_JUNK_POT). Every file that decodes carries its truth
(``{kind: junk, junk: <type>}``; an exact duplicate, being the pot's bytes, says pot).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from stages.demo.backgrounds import draw_background, random_colour
from stages.demo.distractors import DISTRACTOR_KINDS
from stages.demo.items import Item, Rendered, encode, encode_png, render_pot_item, truth_of
from stages.demo.render import pot_rng, render_pot
from stages.shared.demo_labels import JUNK_TYPES

KIND_DISTRACTOR, KIND_JUNK, KIND_JUNK_POT = 1, 2, 3
TINY, ODD_ASPECT = (12, 12), (256, 24)  # (width, height)


def distractor_kind(i: int) -> str:
    return list(DISTRACTOR_KINDS)[i % len(DISTRACTOR_KINDS)]


def junk_type(i: int) -> str:
    return JUNK_TYPES[i % len(JUNK_TYPES)]


def render_distractor(item: Item) -> Rendered:
    rng = pot_rng(item.seed, item.class_index, item.i, KIND_DISTRACTOR)
    image = DISTRACTOR_KINDS[distractor_kind(item.i)](rng, item.size)
    return Rendered(item, "png", encode_png(image, truth=truth_of("distractor")), None, None, None)


def render_junk(item: Item) -> Rendered:
    kind = junk_type(item.i)
    rng = pot_rng(item.seed, item.class_index, item.i, KIND_JUNK)
    ext, data = JUNK_MAKERS[kind](item, rng)
    return Rendered(item, ext, data, kind, None, None)


def _corpus_pot(item: Item, rng) -> Rendered:
    """One of the corpus's own pots of this class (re-rendered: the same bytes)."""
    index = int(rng.integers(item.n_pots))
    return render_pot_item(Item(item.cls, "pot", index, item.seed, item.size, item.n_pots))


def _fresh_pot(item: Item) -> np.ndarray:
    """(H, W, 3) uint8: a pot of this class that is not in the corpus."""
    return render_pot(item.seed, item.class_index, item.i, item.size, kind=KIND_JUNK_POT).image


def _encode(image: np.ndarray | Image.Image, fmt: str, kind: str, **options) -> bytes:
    """The file of junk type ``kind``, its truth inside."""
    return encode(image, fmt, truth_of("junk", kind), **options)


def exact_duplicate(item, rng):
    return "png", _corpus_pot(item, rng).data


def near_duplicate(item, rng):
    """A corpus pot shifted a pixel or two, resized a little, brightened or dimmed, JPEG q85."""
    with Image.open(io.BytesIO(_corpus_pot(item, rng).data)) as img:
        pixels = np.asarray(img.convert("RGB")).astype(np.float64)
    dy, dx = rng.integers(-2, 3, 2)
    pixels = np.roll(pixels, (int(dy), int(dx)), axis=(0, 1)) * rng.uniform(0.88, 1.12)
    side = int(round(item.size * rng.uniform(0.9, 1.1)))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR)
    return "jpg", _encode(img, "JPEG", "near_duplicate", quality=85)


def blank(item, rng):
    colour = (random_colour(rng) * 255).astype(np.uint8)
    return "png", encode_png(np.broadcast_to(colour, (item.size, item.size, 3)).copy(), truth=truth_of("junk", "blank"))


def dark(item, rng):
    image = _fresh_pot(item).astype(np.float64) * rng.uniform(0.03, 0.08)
    return "jpg", _encode(image.astype(np.uint8), "JPEG", "dark", quality=90)


def light(item, rng):
    """Overexposed: most pixels clip to white."""
    image = _fresh_pot(item).astype(np.float64) * rng.uniform(2.5, 4.0) + 120
    return "jpg", _encode(np.clip(image, 0, 255).astype(np.uint8), "JPEG", "light", quality=90)


def blurry(item, rng):
    img = Image.fromarray(_fresh_pot(item)).filter(ImageFilter.GaussianBlur(item.size * rng.uniform(0.08, 0.14)))
    return "jpg", _encode(img, "JPEG", "blurry", quality=90)


def low_information(item, rng):
    """Nearly flat: one colour plus faint noise."""
    base = random_colour(rng) * 255
    image = base + rng.normal(0, 2.5, (item.size, item.size, 3))
    return "png", encode_png(np.clip(image, 0, 255).astype(np.uint8), truth=truth_of("junk", "low_information"))


def tiny(item, rng):
    img = Image.fromarray(_fresh_pot(item)).resize(TINY, Image.Resampling.BOX)
    return "png", _encode(img, "PNG", "tiny")


def odd_aspect(item, rng):
    """A banner strip: 256 x 24 pixels."""
    width, height = ODD_ASPECT
    image = draw_background(rng, height, width=width)
    return "jpg", _encode((image * 255).astype(np.uint8), "JPEG", "odd_aspect", quality=90)


def grayscale(item, rng):
    img = Image.fromarray(_fresh_pot(item)).convert("L")
    return "png", _encode(img, "PNG", "grayscale")


def truncated(item, rng):
    """A pot PNG or JPEG cut in half: the header parses, the pixels are missing (no truth
    inside: nothing reads a file that does not decode)."""
    image = _fresh_pot(item)
    ext, data = ("png", encode_png(image)) if rng.random() < 0.5 else ("jpg", encode(image, "JPEG", quality=90))
    return ext, data[: len(data) // 2]


def not_image(item, rng):
    """An HTML error page served under an image name."""
    code = int(rng.choice([403, 404, 500, 503]))
    html = (f"<!DOCTYPE html>\n<html><head><title>{code} Error</title></head>\n"
            f"<body><h1>{code}</h1><p>The requested image {item.cls}-{item.i}.jpg is not available.</p>"
            f"</body></html>\n")
    return "jpg", html.encode()


JUNK_MAKERS = {name: globals()[name] for name in JUNK_TYPES}
