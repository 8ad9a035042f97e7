"""Data-quality checks on crawled images, after cleanvision's issue types.

``measure(path)`` decodes an image once and returns the scores every check needs
(``ImageStats``); ``quality_reasons(stats, cfg)`` turns a whole collection's scores
into rejection reasons per image. The scores are taken on a thumbnail of at most
``analysis_size`` px, so a JPEG is decoded DCT-scaled (Pillow's ``draft``: 1/2, 1/4 or
1/8 of its size, never below the thumbnail); sizes come from the header, and identical
pixels (exact duplicates) are confirmed by a full decode of the few candidates only. Per-image checks compare one score with a
threshold from params; odd size compares with the collection's median; exact and
near duplicates compare images with each other and keep one per group (of rows a
source put in splits, the copy in the most protected one: a near duplicate of a val
or test image must never train).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stages.filter.thumbmatch import verified_pairs
from stages.shared.neardup import (
    HammingIndex,
    hex_to_uint64,
    phash_hex,
    union_find_groups,
)
from stages.shared.packs import open_image

PER_IMAGE_CHECKS = ("too_small", "odd_aspect", "dark", "light", "low_information", "blurry")
# every check name, in the order params.yaml lists them
ALL_CHECKS = ("corrupt", "too_small", "odd_aspect", "odd_size", "dark", "light", "low_information", "blurry",
              "exact_duplicate", "near_duplicate")
# perceived brightness weights (cleanvision / Darel Rex Finley): sqrt(.241 R^2 + .691 G^2 + .068 B^2)
BRIGHTNESS_WEIGHTS = np.array([0.241, 0.691, 0.068])
LOSSLESS_FORMATS = {"PNG", "BMP", "TIFF", "GIF", "PPM"}
THUMB, THUMB_MARGIN = 32, 1   # near-duplicate verification: 32 px colour thumbnail, +-1 px shifts
# exact-duplicate candidates: phashes this close (identical pixels decoded in full and
# DCT-scaled gave phashes 0-4 bits apart on 1,800 real photos), then a full decode decides
EXACT_CANDIDATE_BITS = 10
SPLIT_RANK = {"train": 0, "val": 1, "test": 2}   # a row's ``split`` (folder trees): higher keeps its copy


@dataclass
class ImageStats:
    """Scores of one image; ``error`` is set (and the rest unset) when it cannot be decoded."""
    error: str | None = None
    width: int = 0
    height: int = 0
    bright_high: float = 0.0    # 99th percentile of perceived brightness, 0..1 (dark when low)
    bright_low: float = 0.0     # 5th percentile (light when high)
    entropy: float = 0.0        # greyscale histogram entropy, bits (0..8), reported only
    contrast: float = 0.0       # widest 99.5th - 0.5th percentile range of R, G or B, 0..1 (low information when low)
    sharpness: float = 0.0      # std of the Laplacian over std of the grey image
    colour_spread: float = 0.0  # 99th percentile of max-min over RGB channels, 0..255
    pixel_hash: str = ""        # sha256 of size + fully decoded RGB pixels: filled only for exact-duplicate candidates
    phash: str = ""             # 64-bit perceptual hash, 16 hex digits
    lossless: bool = False      # PNG/BMP/TIFF/GIF: preferred over a lossy copy of itself
    thumb: np.ndarray | None = field(default=None, repr=False)  # (T+2M, T+2M, 3) uint8, for verifying
    path: str = ""              # the file, decoded again in full only to confirm an exact duplicate
    decode_scale: int = 1       # 1: decoded at full size; 2, 4, 8: a JPEG decoded DCT-scaled (draft)


def decode(path: str | Path) -> tuple[Image.Image, str]:
    """Fully decode an image as RGB, with its file format; a bad file raises OSError/ValueError."""
    with open_image(path) as opened, Image.open(opened) as img:
        img.load()   # forces the whole file to decode: truncation shows up here
        return img.convert("RGB"), img.format or ""


def draft_request(width: int, height: int, analysis_size: int) -> tuple[int, int]:
    """The smallest decoded size that loses nothing the checks look at: the analysis thumbnail
    (rounded up) and the near-duplicate thumbnail, never more than the image itself."""
    ratio = min(analysis_size / width, analysis_size / height, 1.0)
    side = THUMB + 2 * THUMB_MARGIN
    return (min(width, max(math.ceil(width * ratio), side)), min(height, max(math.ceil(height * ratio), side)))


def decode_for_checks(path: str | Path, analysis_size: int, draft: bool) -> tuple[Image.Image, str, tuple[int, int]]:
    """Decode as RGB, a JPEG DCT-scaled when ``draft`` (libjpeg still reads every byte, so a
    truncated file still fails); returns the image, its format and the header's full size."""
    with open_image(path) as opened, Image.open(opened) as img:
        full_size, fmt = img.size, img.format or ""
        if draft and fmt == "JPEG":
            img.draft("RGB", draft_request(*full_size, analysis_size))
        img.load()
        return img.convert("RGB"), fmt, full_size


def measure(path: str | Path, analysis_size: int, draft: bool = True) -> ImageStats:
    """Decode ``path`` and compute every score; never raises for a bad image."""
    try:
        img, fmt, (width, height) = decode_for_checks(path, analysis_size, draft)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        return ImageStats(error=f"{err.__class__.__name__}: {err}".splitlines()[0][:200], path=str(path))
    small = img.copy()
    small.thumbnail((analysis_size, analysis_size), Image.Resampling.BILINEAR)
    rgb = np.asarray(small).astype(np.float64) / 255.0         # (h, w, 3) in 0..1
    # the whole frame squashed to a fixed square undoes a rescaled copy's change of size
    side = THUMB + 2 * THUMB_MARGIN
    thumb = np.asarray(img.resize((side, side), Image.Resampling.BOX))
    return ImageStats(width=width, height=height, phash=phash_hex(img), lossless=fmt in LOSSLESS_FORMATS,
                      thumb=thumb, path=str(path), decode_scale=round(width / img.width), **_pixel_scores(rgb))


def full_pixel_hash(path: str | Path) -> str:
    """sha256 of size + every decoded RGB pixel: equal only for identical pictures."""
    img, _ = decode(path)
    return hashlib.sha256(f"{img.width}x{img.height}:".encode() + img.tobytes()).hexdigest()


def _pixel_scores(rgb: np.ndarray) -> dict:
    """Brightness percentiles, entropy, sharpness and colour spread of an (h, w, 3) 0..1 image."""
    brightness = np.sqrt((rgb ** 2) @ BRIGHTNESS_WEIGHTS)     # (h, w)
    grey = rgb @ np.array([0.299, 0.587, 0.114])               # (h, w), ITU-R 601 luma
    counts = np.bincount(np.clip(grey * 255, 0, 255).astype(np.int64).ravel(), minlength=256)
    prob = counts[counts > 0] / counts.sum()
    # channel planes, contiguous: numpy reduces a length-3 last axis ~20x slower than it
    # combines three planes (same values, exact either way)
    planes = np.moveaxis(rgb, 2, 0).reshape(3, -1)              # (3, h*w), a contiguous copy
    red, green, blue = planes
    spread = (np.maximum(np.maximum(red, green), blue) - np.minimum(np.minimum(red, green), blue)) * 255.0
    # contrast in any channel counts: isoluminant text or shapes on a coloured ground
    # carry information that a grey-only range misses
    low, high = np.array([percentiles(plane, [0.5, 99.5]) for plane in planes]).T    # (3,), (3,)
    bright_low, bright_high = percentiles(brightness.ravel(), [5, 99])
    return {"bright_high": float(bright_high),
            "bright_low": float(bright_low),
            "entropy": float(-(prob * np.log2(prob)).sum()),
            "contrast": float((high - low).max()),
            "sharpness": _sharpness(grey),
            "colour_spread": float(percentiles(spread, [99])[0])}


def percentiles(values: np.ndarray, q: list[float]) -> np.ndarray:
    """``np.percentile(values, q)`` of a 1-D float array without NaNs (method linear), the same
    bits, without its ~80 us of per-call overhead (five calls were a fifth of an image's cost)."""
    n = values.size
    virtual = (n - 1) * (np.asarray(q, dtype=np.float64) / 100)     # where the quantile sits in sorted order
    lower = np.floor(virtual).astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    gamma = virtual - lower
    ordered = np.partition(values, np.unique(np.concatenate([lower, upper])))
    below, above = ordered[lower], ordered[upper]
    step = above - below
    # numpy's lerp: from the nearer end, so gamma 1 gives ``above`` exactly
    return np.where(gamma >= 0.5, above - step * (1 - gamma), below + step * gamma)


def _sharpness(grey: np.ndarray) -> float:
    """Std of the 4-neighbour Laplacian relative to the image's own contrast.

    Dividing by the grey std makes the score contrast-free: a blurred image loses
    high frequencies (the Laplacian) much faster than overall variance.
    """
    if min(grey.shape) < 3:
        return 0.0
    lap = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1]
           - grey[1:-1, :-2] - grey[1:-1, 2:])                 # (h-2, w-2)
    contrast = grey.std()
    return float(lap.std() / contrast) if contrast > 1e-6 else 0.0


def per_image_reasons(stats: ImageStats, cfg) -> list[str]:
    """Reasons from one image's own scores (thresholds from ``filter.quality``)."""
    if stats.error is not None:
        return ["corrupt"] if "corrupt" in cfg.checks else []
    failed = {
        "too_small": min(stats.width, stats.height) < cfg.min_side,
        "odd_aspect": min(stats.width, stats.height) / max(stats.width, stats.height) < cfg.min_aspect,
        "dark": stats.bright_high < cfg.dark_max,
        "light": stats.bright_low > cfg.light_min,
        "low_information": stats.contrast < cfg.low_info_max,
        "blurry": stats.sharpness < cfg.sharpness_min,
    }
    reasons = [name for name in PER_IMAGE_CHECKS if name in cfg.checks and failed[name]]
    if cfg.grayscale == "drop" and stats.colour_spread <= cfg.grayscale_tol:
        reasons.append("grayscale")
    return reasons


def odd_size_flags(stats: list[ImageStats], ratio: float) -> list[bool]:
    """True where sqrt(area) is more than ``ratio`` times above or below the median."""
    sides = np.array([np.sqrt(s.width * s.height) for s in stats if s.error is None])
    if len(sides) == 0:
        return [False] * len(stats)
    median = float(np.median(sides))
    return [s.error is None and not (median / ratio <= np.sqrt(s.width * s.height) <= median * ratio)
            for s in stats]


def duplicate_groups(stats: list[ImageStats], max_distance: int | None,
                     min_correlation: float | None = None) -> list[int]:
    """Group id per image: identical pixels (max_distance None), or phash within max_distance
    (and, when min_correlation is given, thumbnails that correlate at least that much)."""
    if max_distance is None:
        pairs = identical_pairs(stats, phash_pairs(stats, EXACT_CANDIDATE_BITS))
    else:
        pairs = phash_pairs(stats, max_distance)
        if min_correlation is not None and len(pairs):
            pairs = verified_pairs([s.thumb for s in stats], pairs, min_correlation, THUMB_MARGIN)
    return union_find_groups(len(stats), pairs)


def phash_pairs(stats: list[ImageStats], max_distance: int) -> np.ndarray:
    """(P, 2) indices of decodable images whose perceptual hashes differ in <= max_distance bits."""
    ok = [i for i, s in enumerate(stats) if s.error is None]
    local = HammingIndex(hex_to_uint64([stats[i].phash for i in ok]), max_distance).pairs() if ok else []
    return np.array(ok, dtype=np.int64)[local] if len(local) else np.zeros((0, 2), np.int64)


def identical_pairs(stats: list[ImageStats], candidates: np.ndarray) -> np.ndarray:
    """The candidate pairs of the same size whose full decodes are identical pixel for pixel.

    Only candidates that may be identical are decoded again in full (the scores came from a
    reduced decode), and each at most once: its ``pixel_hash`` is kept."""
    maybe = [_may_be_identical(stats[i], stats[j]) for i, j in candidates]
    candidates = candidates[np.array(maybe, dtype=bool)] if len(candidates) else candidates
    for i in np.unique(candidates):
        if not stats[i].pixel_hash:
            stats[i].pixel_hash = _full_pixel_hash_or_own(stats[i], int(i))
    equal = [stats[i].pixel_hash == stats[j].pixel_hash for i, j in candidates]
    return candidates[np.array(equal, dtype=bool)] if len(candidates) else candidates


def _may_be_identical(a: ImageStats, b: ImageStats) -> bool:
    """False when two images cannot have identical pixels. Of the same size, and both decoded
    at full size (not DCT-scaled), their phash and thumbnail come from those very pixels, so
    they must match too: on a corpus of similar pictures most hash candidates differ there,
    and are never decoded again (22k of the 30k demo images were, before)."""
    if (a.width, a.height) != (b.width, b.height):
        return False
    if a.decode_scale == 1 and b.decode_scale == 1:
        return a.phash == b.phash and np.array_equal(a.thumb, b.thumb)
    return True


def _full_pixel_hash_or_own(stats: ImageStats, index: int) -> str:
    """The full decode's pixel hash; a marker equal to no other when the file no longer decodes."""
    try:
        return full_pixel_hash(stats.path)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return f"undecodable #{index}"


def split_ranks(rows: list[dict]) -> list[int]:
    """SPLIT_RANK of each row's ``split`` (0 without one)."""
    return [SPLIT_RANK.get(row.get("split"), 0) for row in rows]


def pick_keepers(groups: list[int], stats: list[ImageStats], other_reasons: list[list[str]],
                 ranks: list[int] | None = None) -> dict[int, int]:
    """Per group, the member to keep: one with no other issue, then the most protected split
    (``ranks``), then a lossless file (a JPEG re-encode is the usual derivative copy), then
    the most pixels, then the earliest row. A copy with another issue is dropped anyway, so
    keeping a clean train copy of it leaks nothing."""
    ranks = ranks or [0] * len(groups)
    best: dict[int, tuple] = {}
    for i, g in enumerate(groups):
        key = (len(other_reasons[i]) > 0, -ranks[i], not stats[i].lossless, -(stats[i].width * stats[i].height), i)
        if g not in best or key < best[g]:
            best[g] = key
    return {g: key[-1] for g, key in best.items()}


def quality_reasons(stats: list[ImageStats], cfg,
                    ranks: list[int] | None = None) -> tuple[list[list[str]], list[dict]]:
    """Reasons and details (e.g. ``duplicate_of`` index) for every image in the collection;
    ``ranks`` (split_ranks) decides which copy of a duplicate stays first."""
    reasons = [per_image_reasons(s, cfg) for s in stats]
    details: list[dict] = [{} for _ in stats]
    if "odd_size" in cfg.checks:
        for i, odd in enumerate(odd_size_flags(stats, cfg.size_ratio)):
            if odd:
                reasons[i].append("odd_size")
    for name, distance, corr in (("exact_duplicate", None, None),
                                 ("near_duplicate", cfg.near_max_distance, cfg.near_min_correlation)):
        if name not in cfg.checks:
            continue
        groups = duplicate_groups(stats, distance, corr)
        keepers = pick_keepers(groups, stats, reasons, ranks)
        for i, g in enumerate(groups):
            already = name == "near_duplicate" and "exact_duplicate" in reasons[i]
            if stats[i].error is None and keepers[g] != i and not already:
                reasons[i].append(name)
                details[i]["duplicate_of"] = keepers[g]
    return reasons, details
