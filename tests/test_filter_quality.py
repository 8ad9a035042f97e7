"""Each quality check on images built to fail exactly that check."""
import numpy as np
import pytest
from PIL import Image, ImageFilter

from stages.filter.config import FilterQuality
from stages.filter.quality import measure, per_image_reasons, quality_reasons

RNG = np.random.default_rng(0)


def scene(width=96, height=96, seed=0) -> Image.Image:
    """A sharp, colourful test picture: a shaded disc on a textured background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(60, 200, size=3)
    img = np.zeros((height, width, 3)) + base
    img += rng.normal(0, 12, size=(height, width, 1))                     # texture
    cx, cy = rng.uniform(0.3, 0.7, size=2) * (width, height)
    rx, ry = rng.uniform(0.15, 0.3, size=2) * (width, height)
    disc = (xx - cx) ** 2 / rx ** 2 + (yy - cy) ** 2 / ry ** 2 < 1
    colour = rng.integers(0, 255, size=3)
    img[disc] = colour * (0.6 + 0.4 * xx[disc, None] / width)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def save(tmp_path, name, img) -> str:
    path = tmp_path / name
    img.save(path)
    return str(path)


def reasons_of(tmp_path, img, **overrides):
    cfg = FilterQuality(**overrides)
    return per_image_reasons(measure(save(tmp_path, "x.png", img), cfg.analysis_size), cfg)


def test_clean_scene_passes(tmp_path):
    assert reasons_of(tmp_path, scene()) == []


@pytest.mark.parametrize("name, make", [
    ("dark", lambda: Image.fromarray((np.asarray(scene()) * 0.08).astype(np.uint8))),
    ("light", lambda: Image.fromarray((255 - (255 - np.asarray(scene()).astype(float)) * 0.05).astype(np.uint8))),
    ("low_information", lambda: Image.new("RGB", (96, 96), (120, 90, 200))),
    ("low_information", lambda: Image.fromarray(np.clip(RNG.normal(120, 2.5, (96, 96, 3)), 0, 255).astype(np.uint8))),
    ("blurry", lambda: scene().filter(ImageFilter.GaussianBlur(4))),
    ("too_small", lambda: scene(20, 20)),
    ("odd_aspect", lambda: scene(160, 40)),
    ("grayscale", lambda: scene().convert("L").convert("RGB")),
])
def test_each_check_fires(tmp_path, name, make):
    assert name in reasons_of(tmp_path, make())


def isoluminant_text() -> Image.Image:
    """Stripes of two colours with the same luma: no grey contrast, plain colour contrast."""
    img = np.zeros((96, 96, 3), dtype=np.uint8) + np.array([60, 150, 30], dtype=np.uint8)    # luma ~ 109
    img[::8] = img[1::8] = (230, 80, 85)                                                       # luma ~ 125
    return Image.fromarray(img)


def test_colour_contrast_is_information(tmp_path):
    """low_information asks for contrast in any channel: isoluminant shapes or text are kept."""
    assert "low_information" not in reasons_of(tmp_path, isoluminant_text())
    assert "low_information" in reasons_of(tmp_path, isoluminant_text().convert("L").convert("RGB"))


def test_checks_can_be_switched_off(tmp_path):
    dark = Image.fromarray((np.asarray(scene()) * 0.08).astype(np.uint8))
    assert "dark" not in reasons_of(tmp_path, dark, checks=["corrupt"])
    grey = scene().convert("L").convert("RGB")
    assert "grayscale" not in reasons_of(tmp_path, grey, grayscale="keep")


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_corrupt_files(tmp_path, content):
    path = tmp_path / "bad.png"
    if content == "truncated":
        scene().save(path)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    stats = measure(path, 128)
    assert stats.error is not None
    assert per_image_reasons(stats, FilterQuality()) == ["corrupt"]


def test_missing_file_is_corrupt(tmp_path):
    assert per_image_reasons(measure(tmp_path / "nope.png", 128), FilterQuality()) == ["corrupt"]


def test_collection_checks(tmp_path):
    original = scene(seed=1)
    paths = [save(tmp_path, "orig.png", original)]
    paths.append(str(tmp_path / "same_pixels.png"))
    original.save(paths[-1], compress_level=0)          # other bytes, identical pixels
    brighter = np.clip(np.asarray(original).astype(int) + 4, 0, 255).astype(np.uint8)
    paths.append(save(tmp_path, "near.png", Image.fromarray(brighter)))
    paths += [save(tmp_path, f"other{k}.png", scene(seed=10 + k)) for k in range(4)]
    paths.append(save(tmp_path, "huge.png", scene(96 * 9, 96 * 9, seed=20)))
    cfg = FilterQuality()
    reasons, details = quality_reasons([measure(p, cfg.analysis_size) for p in paths], cfg)
    assert reasons[0] == []                                 # the first copy is kept
    assert reasons[1] == ["exact_duplicate"] and details[1]["duplicate_of"] == 0
    assert reasons[2] == ["near_duplicate"] and details[2]["duplicate_of"] == 0
    assert all(r == [] for r in reasons[3:7])
    assert reasons[7] == ["odd_size"]


def test_duplicate_keeper_prefers_a_clean_larger_copy(tmp_path):
    big = scene(128, 128, seed=3)
    small = big.resize((96, 96))
    paths = [save(tmp_path, "small.png", small), save(tmp_path, "big.png", big)]
    cfg = FilterQuality()
    reasons, details = quality_reasons([measure(p, cfg.analysis_size) for p in paths], cfg)
    assert reasons == [["near_duplicate"], []]
    assert details[0]["duplicate_of"] == 1


def test_pixel_scores_equal_the_plain_formulas():
    """The channel reductions are computed on contiguous planes for speed: the values must be
    exactly those of the plain (h, w, 3) formulas."""
    from stages.filter.quality import BRIGHTNESS_WEIGHTS, _pixel_scores
    for seed in range(3):
        rgb = np.asarray(scene(97, 61, seed=seed)).astype(np.float64) / 255.0
        brightness = np.sqrt((rgb ** 2) @ BRIGHTNESS_WEIGHTS)
        low, high = np.percentile(rgb.reshape(-1, 3), [0.5, 99.5], axis=0)
        scores = _pixel_scores(rgb)
        assert scores["bright_high"] == np.percentile(brightness, 99)
        assert scores["bright_low"] == np.percentile(brightness, 5)
        assert scores["contrast"] == (high - low).max()
        assert scores["colour_spread"] == np.percentile((rgb.max(axis=2) - rgb.min(axis=2)) * 255.0, 99)


@pytest.mark.parametrize("n", [1, 2, 7, 12288])
def test_percentiles_are_numpys_bit_for_bit(n):
    """The lean percentile gives np.percentile's exact values, ties and ends included."""
    from stages.filter.quality import percentiles
    rng = np.random.default_rng(n)
    for values in (rng.random(n), rng.integers(0, 256, n) / 255.0):
        q = [0, 0.5, 5, 50, 99, 99.5, 100]
        assert np.array_equal(percentiles(values.copy(), q), np.percentile(values, q))


def test_exact_duplicates_decode_again_only_what_may_be_identical(tmp_path, monkeypatch):
    """Hash candidates decoded at full size whose thumbnails differ are ruled out without a
    second decode; a true copy (other bytes, same pixels) is still confirmed by one."""
    import stages.filter.quality as quality
    original = scene(seed=1)
    paths = [save(tmp_path, "orig.png", original), str(tmp_path / "copy.png")]
    original.save(paths[1], compress_level=0)
    brighter = np.clip(np.asarray(original).astype(int) + 4, 0, 255).astype(np.uint8)
    paths.append(save(tmp_path, "near.png", Image.fromarray(brighter)))   # a hash candidate, not a copy
    decoded = []
    real_hash = quality.full_pixel_hash
    monkeypatch.setattr(quality, "full_pixel_hash", lambda p: decoded.append(p) or real_hash(p))
    stats = [measure(p, 128) for p in paths]
    assert len(quality.phash_pairs(stats, quality.EXACT_CANDIDATE_BITS)) == 3
    pairs = quality.identical_pairs(stats, quality.phash_pairs(stats, quality.EXACT_CANDIDATE_BITS))
    assert pairs.tolist() == [[0, 1]]
    assert sorted(decoded) == sorted(paths[:2])
