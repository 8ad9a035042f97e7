"""The fast quality pass: DCT-scaled JPEG decoding gives the same verdicts as a full decode,
sizes come from the header, exact duplicates are still identical pixels, and any number of
worker processes gives the same scores in the same order."""
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.demo.corpus import plan_items, render_item
from stages.filter import measure_pool
from stages.filter.config import FilterQuality
from stages.filter.measure_pool import CHUNK, POOL_MIN_IMAGES, measure_all, worker_count
from stages.filter.quality import measure, quality_reasons
from tests.test_filter_quality import scene

CATSDOGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "catsdogs" / "train"


def same(a, b) -> bool:
    """Every field of two ImageStats equal (thumbnails as arrays)."""
    for f in dataclasses.fields(a):
        u, v = getattr(a, f.name), getattr(b, f.name)
        if not (np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v):
            return False
    return True


def save_jpeg(path: Path, img: Image.Image, **options) -> str:
    img.save(path, "JPEG", quality=options.pop("quality", 92), **options)
    return str(path)


def render_demo(folder: Path, size: int) -> list[str]:
    """A small demo corpus (pots, distractors, one of every junk type) as files, plus a JPEG
    copy of every pot and distractor so that ordinary pictures are drafted too."""
    paths = []
    for rendered in map(render_item, plan_items(["bowl", "vase"], 5, size, 4, 2, 12)):
        path = folder / rendered.name
        path.write_bytes(rendered.data)
        paths.append(str(path))
        if rendered.item.kind != "junk":
            with Image.open(io.BytesIO(rendered.data)) as img:
                paths.append(save_jpeg(folder / f"{path.stem}-copy.jpg", img.convert("RGB")))
    return paths


def test_draft_decodes_smaller_and_sizes_come_from_the_header(tmp_path):
    path = save_jpeg(tmp_path / "big.jpg", scene(600, 400))
    drafted, full = measure(path, 128, draft=True), measure(path, 128, draft=False)
    assert drafted.decode_scale == 4 and full.decode_scale == 1   # 150x100 still covers the 128x86 thumbnail
    assert (drafted.width, drafted.height) == (full.width, full.height) == (600, 400)
    banner = save_jpeg(tmp_path / "banner.jpg", scene(1600, 200))
    stats = measure(banner, 128, draft=True)
    assert stats.decode_scale > 1 and (stats.width, stats.height) == (1600, 200)
    reasons, _ = quality_reasons([stats], FilterQuality())
    assert reasons == [["odd_aspect"]]


def test_draft_never_goes_below_the_thumbnails(tmp_path):
    """A 250 px JPEG is not drafted for a 128 px thumbnail (1/2 would be 125 px); a PNG never is."""
    assert measure(save_jpeg(tmp_path / "a.jpg", scene(250, 250)), 128).decode_scale == 1
    assert measure(save_jpeg(tmp_path / "b.jpg", scene(256, 256)), 128).decode_scale == 2
    scene(600, 600).save(tmp_path / "b.png")
    assert measure(tmp_path / "b.png", 128).decode_scale == 1


def test_truncated_jpeg_is_corrupt_with_draft(tmp_path):
    data = Path(save_jpeg(tmp_path / "whole.jpg", scene(600, 400))).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert measure(tmp_path / "cut.jpg", 128, draft=True).error is not None


def test_exact_duplicates_are_identical_pixels(tmp_path):
    """A JPEG (drafted), the same stream with a byte appended, and a PNG of its full decode are
    one picture; a copy differing in one pixel is only a near duplicate."""
    original = save_jpeg(tmp_path / "a.jpg", scene(512, 384, seed=4))
    with Image.open(original) as img:
        pixels = np.asarray(img.convert("RGB")).copy()
        img.convert("RGB").save(tmp_path / "a-decoded.png")
    Path(tmp_path / "a-same-stream.jpg").write_bytes(Path(original).read_bytes() + b"\0")   # trailing byte
    pixels[100, 100] = 255 - pixels[100, 100]
    Image.fromarray(pixels).save(tmp_path / "a-one-pixel.png")
    paths = [original, str(tmp_path / "a-same-stream.jpg"), str(tmp_path / "a-decoded.png"),
             str(tmp_path / "a-one-pixel.png")]
    stats = [measure(p, 128) for p in paths]
    assert stats[0].decode_scale == 4 and stats[1].decode_scale == 4
    reasons, details = quality_reasons(stats, FilterQuality())
    # the lossless PNG is the keeper of the identical trio; the one-pixel change is a near duplicate
    assert reasons == [["exact_duplicate"], ["exact_duplicate"], [], ["near_duplicate"]]
    assert details[0]["duplicate_of"] == details[1]["duplicate_of"] == 2


def test_demo_verdicts_unchanged_by_draft(tmp_path):
    """At 256 px the demo's JPEGs are decoded at half size; every verdict stays the same."""
    paths = render_demo(tmp_path, 256)
    cfg = FilterQuality()
    full = [measure(p, cfg.analysis_size, draft=False) for p in paths]
    drafted = [measure(p, cfg.analysis_size, draft=True) for p in paths]
    assert sum(s.decode_scale > 1 for s in drafted) >= 15
    assert quality_reasons(drafted, cfg) == quality_reasons(full, cfg)
    assert [(s.width, s.height) for s in drafted] == [(s.width, s.height) for s in full]


def test_shipped_demo_size_is_never_drafted(tmp_path):
    """At the shipped 64 px nothing is big enough to draft: the demo's scores are the old ones."""
    assert all(measure(p, 128).decode_scale == 1 for p in render_demo(tmp_path, 64))


def test_worker_count_does_not_change_scores_or_order(tmp_path, monkeypatch):
    monkeypatch.setattr(measure_pool, "POOL_MIN_IMAGES", 0)    # a pool even for these few
    paths = [save_jpeg(tmp_path / f"{k:03d}.jpg", scene(320 + 8 * (k % 5), 256, seed=k)) for k in range(2 * CHUNK + 5)]
    (tmp_path / "bad.jpg").write_bytes(b"not a picture")
    paths.insert(7, str(tmp_path / "bad.jpg"))
    one = measure_all(paths, 128, workers=1)
    two = measure_all(paths, 128, workers=2)
    assert [s.path for s in two] == paths
    assert all(same(a, b) for a, b in zip(one, two, strict=True))
    assert two[7].error is not None


def test_worker_count():
    assert worker_count(1, 10_000) == 1
    assert worker_count(3, 10_000) == 3
    assert worker_count(8, POOL_MIN_IMAGES - 1) == 1     # too few to pay for starting a pool
    assert worker_count(0, 10_000) >= 1                  # 0: every core
    assert worker_count(64, 20 * CHUNK + 1) == 21        # no more workers than chunks


@pytest.mark.skipif(not CATSDOGS.is_dir(), reason="real photos (../shared/data/catsdogs) not present")
def test_real_photos_keep_sizes_and_verdicts(tmp_path):
    """On 120 real photos: header sizes, and draft changes the verdict of at most one."""
    paths = sorted(str(p) for p in CATSDOGS.rglob("*.jpg"))[::10]
    cfg = FilterQuality()
    full = [measure(p, cfg.analysis_size, draft=False) for p in paths]
    drafted = measure_all(paths, cfg.analysis_size, draft=True, workers=2)
    assert [(s.width, s.height) for s in drafted] == [(s.width, s.height) for s in full]
    assert sum(s.decode_scale > 1 for s in drafted) > len(paths) // 2
    before, _ = quality_reasons(full, cfg)
    after, _ = quality_reasons(drafted, cfg)
    assert sum(a != b for a, b in zip(before, after)) <= 1
