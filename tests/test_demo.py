"""The demo corpus renderer: determinism, separability, junk that is what it claims, truth inside
every file, the ``python -m stages.demo`` tool (the crawl renders the corpus itself; no DVC stage)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.demo import shapes
from stages.demo.__main__ import render_all
from stages.demo.corpus import plan_items, render_item
from stages.demo.junk import JUNK_TYPES, ODD_ASPECT, TINY
from stages.demo.render import FACTOR_NAMES, render_pot
from stages.common.io import sha256_bytes
from stages.shared.pngmeta import read_fields_chunk, read_truth_chunk

REPO = Path(__file__).resolve().parents[1]
SIZE = 32


def corpus(seed: int, pots: int = 3, distractors: int = 6, junk: int = len(JUNK_TYPES), workers: int = 1):
    items = plan_items(["bowl", "vase"], seed, SIZE, pots, distractors, junk)
    return render_all(items, workers)


@pytest.fixture(scope="module")
def small_corpus():
    return corpus(7)


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_same_seed_same_bytes_any_order_or_workers(small_corpus):
    again = corpus(7, workers=2)
    assert [sha256_bytes(r.data) for r in small_corpus] == [sha256_bytes(r.data) for r in again]
    # one item alone renders the same as inside the whole plan: no hidden shared state
    lone = render_item(small_corpus[-1].item)
    assert lone.data == small_corpus[-1].data


def test_different_seed_different_bytes(small_corpus):
    other = corpus(8)
    pots = lambda rs: {sha256_bytes(r.data) for r in rs if r.item.kind == "pot"}
    assert pots(small_corpus).isdisjoint(pots(other))
    distractors = lambda rs: [r.data for r in rs if r.item.kind == "distractor"]
    assert distractors(small_corpus) != distractors(other)


def test_classes_differ_in_shape():
    """Bowls are wider than tall and vases taller than wide, whatever the rotation (+-20 deg)."""
    def aspect(class_index, i):
        ys, xs = np.nonzero(render_pot(3, class_index, i, SIZE).coverage > 0.5)
        return (np.ptp(xs) + 1) / (np.ptp(ys) + 1)
    bowls = [aspect(0, i) for i in range(25)]
    vases = [aspect(1, i) for i in range(25)]
    assert min(bowls) > 1.1 and max(vases) < 0.9, (min(bowls), max(vases))


def test_position_does_not_give_the_class_away():
    """Pot centres spread over the image for both classes, with similar means."""
    def centres(class_index):
        return np.array([[render_pot(5, class_index, i, SIZE).factors[k] for k in ("x", "y")] for i in range(40)])
    bowls, vases = centres(0), centres(1)
    for pts in (bowls, vases):
        assert np.ptp(pts[:, 0]) > 0.3 and np.ptp(pts[:, 1]) > 0.2
    assert np.abs(bowls.mean(0) - vases.mean(0)).max() < 0.12


def test_pot_fields_and_factors(small_corpus):
    pots = [r for r in small_corpus if r.item.kind == "pot"]
    for r in pots:
        assert len(r.fields) == shapes.FIELDS_LEN == 69
        types = np.array(r.fields).reshape(23, 3)[:, 0]
        assert set(types) <= {0.0, 1.0}
        assert read_fields_chunk(r.data) == r.fields
        assert read_truth_chunk(r.data) == {"kind": "pot", "junk": None, "factors": r.factors}
        assert list(r.factors) == list(FACTOR_NAMES)
        assert all(isinstance(v, float) for v in r.factors.values())
        assert decode(r.data).size == (SIZE, SIZE)
    # the fields describe the shape: a vase's height exceeds its width, a bowl's does not
    for r in pots:
        tall = r.factors["height"] > r.factors["width"]
        assert tall == (r.item.cls == "vase")


def test_ground_factors_describe_the_visible_ground():
    """ground_value is the value of the ground's mean colour: where the pot does not cover it,
    the image shows that ground (exactly for a solid one, up to the render noise)."""
    import colorsys

    recorded, seen, kinds = [], [], set()
    for i in range(30):
        pot = render_pot(11, i % 2, i, SIZE)
        visible = pot.image[pot.coverage < 0.01].mean(0) / 255
        recorded.append(pot.factors["ground_value"])
        seen.append(colorsys.rgb_to_hsv(*visible)[2])
        kinds.add(pot.factors["ground_kind"])
        if pot.factors["ground_kind"] == 0:   # solid
            assert abs(seen[-1] - recorded[-1]) < 0.02
    assert kinds == {0.0, 1.0, 2.0}
    assert np.corrcoef(recorded, seen)[0, 1] > 0.9


def test_recording_the_ground_draws_nothing_more():
    """draw_ground returns what draw_background draws and leaves the random stream where it
    did, so recording ground factors kept every image of the corpus as it was."""
    from stages.demo.backgrounds import draw_background, draw_ground

    for seed in range(6):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        image, _ = draw_ground(a, SIZE, avoid=np.array([0.5, 0.2, 0.1]))
        assert np.array_equal(image, draw_background(b, SIZE, avoid=np.array([0.5, 0.2, 0.1])))
        assert a.random() == b.random()


def test_every_junk_type_is_what_it_claims(small_corpus):
    junk = {(r.item.cls, r.junk): r for r in small_corpus if r.item.kind == "junk"}
    assert {kind for _, kind in junk} == set(JUNK_TYPES)
    pots = {r.data for r in small_corpus if r.item.kind == "pot"}
    for cls in ("bowl", "vase"):
        get = lambda kind: junk[(cls, kind)].data
        assert get("exact_duplicate") in pots
        near = decode(get("near_duplicate"))
        assert near.format == "JPEG" and get("near_duplicate") not in pots
        assert decode(get("tiny")).size == TINY
        assert decode(get("odd_aspect")).size == ODD_ASPECT
        assert decode(get("grayscale")).mode == "L"
        pixels = lambda kind: np.asarray(decode(get(kind)).convert("RGB"), dtype=np.float64)
        assert np.ptp(pixels("blank"), axis=(0, 1)).max() == 0
        assert pixels("low_information").std(axis=(0, 1)).max() < 5
        assert pixels("dark").mean() < 25
        assert pixels("light").mean() > 200
        assert _sharpness(pixels("blurry")) < 0.2 * np.median([_sharpness(pixels_of(p)) for p in pots])
        with pytest.raises(Exception):
            decode(get("truncated"))
        with pytest.raises(Exception):
            decode(get("not_image"))
        assert get("not_image").lstrip().lower().startswith(b"<!doctype html")
        assert junk[(cls, "not_image")].ext == "jpg"
        # every junk file that decodes says what it is; an exact duplicate is the pot's bytes
        for kind in set(JUNK_TYPES) - {"truncated", "not_image", "exact_duplicate"}:
            assert read_truth_chunk(get(kind)) == {"kind": "junk", "junk": kind, "factors": None}, kind
        assert read_truth_chunk(get("exact_duplicate"))["kind"] == "pot"


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(decode(data).convert("RGB"), dtype=np.float64)


def _sharpness(pixels: np.ndarray) -> float:
    """Variance of a 4-neighbour Laplacian of the gray image: low for blurred images."""
    gray = pixels.mean(axis=2)
    lap = 4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    return float(lap.var())


def test_distractors_are_images_without_fields(small_corpus):
    distractors = [r for r in small_corpus if r.item.kind == "distractor"]
    assert len(distractors) == 12
    for r in distractors:
        assert decode(r.data).size == (SIZE, SIZE)
        assert r.fields is None and r.factors is None and read_fields_chunk(r.data) is None
        assert read_truth_chunk(r.data) == {"kind": "distractor", "junk": None, "factors": None}


def run_stage(tmp_path: Path, params: str, *extra: str) -> subprocess.CompletedProcess:
    """``python -m stages.demo``: a tool now (tests, benches, a look at the corpus), not a stage."""
    (tmp_path / "params.yaml").write_text(params)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "stages.demo", "--out", "data/demo", *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


TINY_PARAMS = """
base: {seed: 11, classes: [vase, bowl]}
demo: {n_per_class: 6, image_size: 32, distractors_per_class: 6, junk_per_class: 12}
"""


def test_stage_writes_the_corpus(tmp_path):
    done = run_stage(tmp_path, TINY_PARAMS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("demo: 48 items (12 pots, 12 distractors, 24 junk)")
    out = tmp_path / "data/demo"
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and len({r["id"] for r in rows}) == 48
    assert len(list((out / "files").iterdir())) == 48
    for row in rows:
        data = (tmp_path / row["file"]).read_bytes()
        assert row["file"].startswith("data/demo/files/") and sha256_bytes(data) == row["sha256"]
        assert (row["junk"] is None) == (row["kind"] != "junk")
        assert (row["fields"] is None) == (row["kind"] != "pot")
    assert {r["class"] for r in rows} == {"vase", "bowl"}
    pots = [json.loads(line) for line in (out / "pots.jsonl").read_text().splitlines()]
    assert [p["path"] for p in pots] == [r["file"] for r in rows if r["kind"] == "pot"]
    assert all(len(p["fields"]) == 69 and p["factors"] for p in pots)
    preview = Image.open(out / "preview.png")
    assert preview.height == 4 * 32 and preview.width >= 6 * 32
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_stage_rejects_unknown_class(tmp_path):
    done = run_stage(tmp_path, TINY_PARAMS.replace("[vase, bowl]", "[vase, teapot]"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "base.classes" in lines[0] and "teapot" in lines[0]
    assert not (tmp_path / "data/demo").exists()


def test_stage_rejects_bad_demo_value(tmp_path):
    done = run_stage(tmp_path, TINY_PARAMS.replace("image_size: 32", "image_size: 8"))
    assert done.returncode == 2 and "demo.image_size" in done.stderr
