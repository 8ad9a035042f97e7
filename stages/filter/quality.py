"""Data-quality checks on crawled images, after cleanvision's issue types.

``measure(path)`` decodes an image once and returns the scores every check needs
(``ImageStats``); ``quality_reasons(stats, cfg)`` turns a whole collection's scores
into rejection reasons per image. Per-image checks compare one score with a
threshold from params; odd size compares with the collection's median; exact and
near duplicates compare images with each other and keep one per group (of rows a
source put in splits, the copy in the most protected one: a near duplicate of a val
or test image must never train).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stages.shared.neardup import (
    HammingIndex,
    hex_to_uint64,
    phash_hex,
    union_find_groups,
)

PER_IMAGE_CHECKS = ("too_small", "odd_aspect", "dark", "light", "low_information", "blurry")
# every check name, in the order params.yaml lists them
ALL_CHECKS = ("corrupt", "too_small", "odd_aspect", "odd_size", "dark", "light", "low_information", "blurry",
              "exact_duplicate", "near_duplicate")
# perceived brightness weights (cleanvision / Darel Rex Finley): sqrt(.241 R^2 + .691 G^2 + .068 B^2)
BRIGHTNESS_WEIGHTS = np.array([0.241, 0.691, 0.068])
LOSSLESS_FORMATS = {"PNG", "BMP", "TIFF", "GIF", "PPM"}
THUMB, THUMB_MARGIN = 32, 1   # near-duplicate verification: 32 px colour thumbnail, +-1 px shifts
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
    pixel_hash: str = ""        # sha256 of size + decoded RGB pixels
    phash: str = ""             # 64-bit perceptual hash, 16 hex digits
    lossless: bool = False      # PNG/BMP/TIFF/GIF: preferred over a lossy copy of itself
    thumb: np.ndarray | None = field(default=None, repr=False)  # (T+2M, T+2M, 3) uint8, for verifying


def decode(path: str | Path) -> tuple[Image.Image, str]:
    """Fully decode an image as RGB, with its file format; a bad file raises OSError/ValueError."""
    with Image.open(path) as img:
        img.load()   # forces the whole file to decode: truncation shows up here
        return img.convert("RGB"), img.format or ""


def measure(path: str | Path, analysis_size: int) -> ImageStats:
    """Decode ``path`` and compute every score; never raises for a bad image."""
    try:
        img, fmt = decode(path)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        return ImageStats(error=f"{err.__class__.__name__}: {err}".splitlines()[0][:200])
    full = np.asarray(img)                                     # (H, W, 3) uint8
    pixel_hash = hashlib.sha256(f"{img.width}x{img.height}:".encode() + full.tobytes()).hexdigest()
    small = img.copy()
    small.thumbnail((analysis_size, analysis_size), Image.Resampling.BILINEAR)
    rgb = np.asarray(small).astype(np.float64) / 255.0         # (h, w, 3) in 0..1
    # the whole frame squashed to a fixed square undoes a rescaled copy's change of size
    side = THUMB + 2 * THUMB_MARGIN
    thumb = np.asarray(img.resize((side, side), Image.Resampling.BOX))
    return ImageStats(width=img.width, height=img.height, pixel_hash=pixel_hash, phash=phash_hex(img),
                      lossless=fmt in LOSSLESS_FORMATS, thumb=thumb, **_pixel_scores(rgb))


def _pixel_scores(rgb: np.ndarray) -> dict:
    """Brightness percentiles, entropy, sharpness and colour spread of an (h, w, 3) 0..1 image."""
    brightness = np.sqrt((rgb ** 2) @ BRIGHTNESS_WEIGHTS)     # (h, w)
    grey = rgb @ np.array([0.299, 0.587, 0.114])               # (h, w), ITU-R 601 luma
    counts = np.bincount(np.clip(grey * 255, 0, 255).astype(np.int64).ravel(), minlength=256)
    prob = counts[counts > 0] / counts.sum()
    spread = (rgb.max(axis=2) - rgb.min(axis=2)) * 255.0
    # contrast in any channel counts: isoluminant text or shapes on a coloured ground
    # carry information that a grey-only range misses
    low, high = np.percentile(rgb.reshape(-1, 3), [0.5, 99.5], axis=0)     # (3,), (3,)
    return {"bright_high": float(np.percentile(brightness, 99)),
            "bright_low": float(np.percentile(brightness, 5)),
            "entropy": float(-(prob * np.log2(prob)).sum()),
            "contrast": float((high - low).max()),
            "sharpness": _sharpness(grey),
            "colour_spread": float(np.percentile(spread, 99))}


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


def thumb_similarity(a: np.ndarray, b: np.ndarray, margin: int = THUMB_MARGIN) -> np.ndarray:
    """Best normalised correlation of paired thumbnails over shifts of up to ``margin`` pixels.

    a, b: (P, T+2M, T+2M, 3) uint8 -> (P,) in [-1, 1]. Mean-centring and unit norm make
    it blind to a brightened or dimmed copy; the shifts absorb a pixel or two of offset.
    """
    def unit(x: np.ndarray) -> np.ndarray:                         # (P, D) zero mean, unit norm
        x = x.reshape(len(x), -1).astype(np.float32)
        x -= x.mean(axis=1, keepdims=True)
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)

    side = a.shape[1] - 2 * margin
    core = unit(a[:, margin:margin + side, margin:margin + side])
    best = np.full(len(a), -1.0, dtype=np.float32)
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            window = b[:, margin + dy:margin + dy + side, margin + dx:margin + dx + side]
            best = np.maximum(best, np.einsum("pd,pd->p", core, unit(window)))
    return best


def verified_pairs(stats: list[ImageStats], pairs: np.ndarray, min_correlation: float,
                   chunk: int = 4096) -> np.ndarray:
    """Keep the hash-candidate pairs whose thumbnails correlate at least ``min_correlation``."""
    keep = np.zeros(len(pairs), dtype=bool)
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        a = np.stack([stats[i].thumb for i in part[:, 0]])
        b = np.stack([stats[j].thumb for j in part[:, 1]])
        keep[start:start + chunk] = thumb_similarity(a, b) >= min_correlation
    return pairs[keep]


def duplicate_groups(stats: list[ImageStats], max_distance: int | None,
                     min_correlation: float | None = None) -> list[int]:
    """Group id per image: identical pixels (max_distance None), or phash within max_distance
    (and, when min_correlation is given, thumbnails that correlate at least that much)."""
    ok = [i for i, s in enumerate(stats) if s.error is None]
    if max_distance is None:
        first: dict[str, int] = {}
        pairs = [(first.setdefault(stats[i].pixel_hash, i), i) for i in ok]
        pairs = np.array([p for p in pairs if p[0] != p[1]], dtype=np.int64).reshape(-1, 2)
    else:
        hashes = hex_to_uint64([stats[i].phash for i in ok])
        local = HammingIndex(hashes, max_distance).pairs() if ok else np.zeros((0, 2), np.int64)
        pairs = np.array(ok, dtype=np.int64)[local] if len(local) else np.zeros((0, 2), np.int64)
        if min_correlation is not None and len(pairs):
            pairs = verified_pairs(stats, pairs, min_correlation)
    return union_find_groups(len(stats), pairs)


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
