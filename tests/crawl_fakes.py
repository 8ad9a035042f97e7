"""Small corpora and servers for the crawl tests (not a test module itself)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, PngImagePlugin


def png_bytes(size=(64, 64), color=(120, 80, 40), fields=None, mode="RGB") -> bytes:
    info = PngImagePlugin.PngInfo()
    if fields is not None:
        info.add_text("kiln.fields", json.dumps(fields))
    out = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def jpeg_bytes(size=(64, 64), color=(30, 160, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG", quality=90)
    return out.getvalue()


def noisy_jpeg(size=(96, 96), seed=0) -> bytes:
    """A JPEG with real entropy, so cutting it leaves a valid header and missing scans."""
    import random
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_corpus(root: Path, per_class: int = 6, classes=("bowl", "vase")) -> list[dict]:
    """A demo-format corpus: pots (PNG + kiln.fields), one distractor and junk per class.

    Junk: a byte-exact duplicate of the first pot, a tiny image, a truncated JPEG and
    an HTML page saved as .jpg. Returns the index rows.
    """
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    rows = []

    def add(item_id, ext, data, kind, cls, junk=None, fields=None):
        (files / f"{item_id}.{ext}").write_bytes(data)
        rows.append({"id": item_id, "file": f"{root.name}/files/{item_id}.{ext}", "kind": kind,
                     "class": cls, "junk": junk, "fields": fields, "sha256": ""})

    for c, cls in enumerate(classes):
        for i in range(per_class):
            fields = [float(c), float(i), 0.5]
            add(f"{cls}-pot-{i}", "png", png_bytes(color=(10 * i, 100 + c * 50, 30), fields=fields),
                "pot", cls, fields=fields)
        add(f"{cls}-distractor", "jpg", jpeg_bytes(color=(200, 20 + c * 40, 20)), "distractor", cls)
        first_pot = (files / f"{cls}-pot-0.png").read_bytes()
        add(f"{cls}-junk-dup", "png", first_pot, "junk", cls, junk="duplicate")
        add(f"{cls}-junk-tiny", "png", png_bytes(size=(8, 8)), "junk", cls, junk="tiny")
        add(f"{cls}-junk-trunc", "jpg", noisy_jpeg()[:2000], "junk", cls, junk="truncated")
        add(f"{cls}-junk-html", "jpg", b"<!doctype html><p>not an image</p>", "junk", cls, junk="non_image")
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


QUIET_LOCAL = {"slow_fraction": 0, "error_fraction": 0, "flaky_fraction": 0,
               "redirect_fraction": 0, "wrong_type_fraction": 0}


def write_params(path: Path, crawl: dict, classes=("bowl", "vase"), seed: int = 7) -> Path:
    import yaml
    path.write_text(yaml.safe_dump({"base": {"seed": seed, "classes": list(classes)}, "crawl": crawl}))
    return path


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid greyscale PNG of width x height zeros (~0.9 GB of pixels in ~1 MB of file).

    The deflate stream is one block of 100 rows, full-flushed (so its bytes repeat
    exactly), repeated height/100 times; built in about a second.
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = (b"\0" * (width + 1)) * 100          # filter byte + one byte per pixel, 100 rows
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    block = packer.compress(rows) + packer.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // 100):
        adler = zlib.adler32(rows, adler)
    tail = zlib.compressobj(6, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    idat = b"\x78\x9c" + block * (height // 100) + tail + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
