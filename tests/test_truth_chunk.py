"""Ground truth travels inside the files: written by the demo, read back by the crawl into rows."""
from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from stages.crawl.fetch.assemble import collect_outcome
from stages.crawl.fetch.images import Limits, check_image
from stages.crawl.fetch.journal import Journal, work_dir
from stages.demo.corpus import plan_items, render_item
from stages.demo.items import encode, encode_png
from stages.demo.render import render_pot
from stages.shared.pngmeta import (
    TRUTH_CHUNK,
    kiln_pnginfo,
    read_fields_chunk,
    read_truth_chunk,
    truth_from_info,
    truth_jpeg_comment,
)

LIMITS = Limits(("image/jpeg", "image/png", "image/webp"), 40_000_000, 8)
POT = {"kind": "pot", "junk": None, "factors": {"height": 0.5, "glaze_hue": 0.125}}
IMAGE = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)


def without_truth(data: bytes) -> bytes:
    """The bytes with the kiln.truth PNG text chunk or JPEG comment cut out."""
    if data.startswith(b"\x89PNG"):
        out, i = data[:8], 8
        while i < len(data):
            n = struct.unpack(">I", data[i:i + 4])[0]
            chunk = data[i:i + 12 + n]
            if not (chunk[4:8] == b"tEXt" and chunk[8:].startswith(TRUTH_CHUNK.encode() + b"\0")):
                out += chunk
            i += 12 + n
        return out
    start = data.find(b"\xff\xfe")   # JPEG COM segment
    return data[:start] + data[start + 2 + int.from_bytes(data[start + 2:start + 4], "big"):]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truth_round_trips_through_png_and_jpeg(fmt):
    data = encode(IMAGE, fmt, POT)
    assert read_truth_chunk(data) == POT
    assert without_truth(data) == encode(IMAGE, fmt)   # the chunk is the only change
    assert read_truth_chunk(encode(IMAGE, fmt)) is None


def test_pot_png_carries_fields_and_truth_and_nothing_else_changed():
    pot = render_pot(3, 1, 4, 32)
    data = encode_png(pot.image, pot.fields, {"kind": "pot", "junk": None, "factors": pot.factors})
    assert read_truth_chunk(data)["factors"] == pot.factors
    assert read_fields_chunk(data) == [round(float(x), 6) for x in pot.fields]
    assert without_truth(data) == encode_png(pot.image, pot.fields)   # the pre-truth demo's bytes


@pytest.mark.parametrize("text", [
    "not json", json.dumps(["pot"]), json.dumps({"kind": "teapot"}),
    json.dumps({"kind": "junk", "junk": "made_up"}), json.dumps({"kind": "pot", "factors": {"h": "tall"}}),
])
def test_malformed_or_foreign_truth_is_ignored(text):
    assert truth_from_info({TRUTH_CHUNK: text}) is None
    assert truth_from_info({"comment": b"kiln.truth=" + text.encode()}) is None
    assert truth_from_info({"comment": b"a camera's own comment"}) is None


def test_every_decodable_demo_file_carries_its_truth():
    for rendered in map(render_item, plan_items(["bowl", "vase"], 5, 32, 2, 6, 12)):
        if rendered.junk in ("truncated", "not_image"):   # nothing reads a file that does not decode
            continue
        truth = read_truth_chunk(rendered.data)
        expected_kind = "pot" if rendered.junk == "exact_duplicate" else rendered.item.kind
        assert truth["kind"] == expected_kind, rendered.item.stem
        if expected_kind == "junk":
            assert truth["junk"] == rendered.junk
        assert (truth["factors"] is not None) == (expected_kind == "pot")


def test_crawl_keeps_rgb_bytes_and_reads_truth():
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg")):
        body = encode(IMAGE, fmt, POT)
        kept = check_image(body, LIMITS)
        assert (kept.data, kept.ext, kept.truth) == (body, ext, POT)   # stored byte for byte


def test_a_reencoded_file_keeps_its_truth_and_fields():
    grey = io.BytesIO()
    truth = {"kind": "junk", "junk": "grayscale", "factors": None}
    Image.fromarray(IMAGE[..., 0]).save(grey, format="PNG", pnginfo=kiln_pnginfo([1.5], truth))
    kept = check_image(grey.getvalue(), LIMITS)
    assert kept.data != grey.getvalue() and Image.open(io.BytesIO(kept.data)).mode == "RGB"
    assert (kept.truth, kept.fields) == (truth, [1.5])
    assert read_truth_chunk(kept.data) == truth and read_fields_chunk(kept.data) == [1.5]


def test_jpeg_comment_is_pillows_comment_option():
    buf = io.BytesIO()
    Image.fromarray(IMAGE).save(buf, format="JPEG", comment=truth_jpeg_comment(POT))
    assert read_truth_chunk(buf.getvalue()) == POT


def test_manifest_rows_carry_truth_and_factors(tmp_path):
    journal = Journal(work_dir(tmp_path / "work", "fp"))
    journal.append({"kind": "search", "term": "bowl", "class": "bowl", "missing": 0, "error": None,
                    "page_url": "p", "urls": ["a", "b"]})
    base = {"kind": "item", "ok": True, "ext": "png", "width": 40, "height": 40, "bytes": 1, "time": "t",
            "final_url": "x", "fields": None}
    journal.append({**base, "key": "a", "sha256": "1" * 64, "truth": POT})
    journal.append({**base, "key": "b", "sha256": "2" * 64})   # a journal from before truth: no key
    outcome = collect_outcome(journal, [("bowl", "bowl")], "local", tmp_path / "raw", str)
    journal.close()
    first, second = outcome.rows
    assert first["truth"] == {"kind": "pot", "junk": None} and first["factors"] == POT["factors"]
    assert second["truth"] is None and second["factors"] is None
    assert "split" not in first
