"""Backgrounds behind the pots and distractors: solid, linear gradient or smooth noise."""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

MIN_CONTRAST = 0.3  # RGB distance (0..sqrt 3) the background keeps from the object's colour


def random_colour(rng: np.random.Generator) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.7), rng.uniform(0.05, 1.0)))


def contrasting_colour(rng: np.random.Generator, avoid: np.ndarray | None, tries: int = 12) -> np.ndarray:
    """A random colour at least MIN_CONTRAST from ``avoid``, so the object's outline stays visible."""
    colour = random_colour(rng)
    for _ in range(tries):
        if avoid is None or np.linalg.norm(colour - avoid) >= MIN_CONTRAST:
            break
        colour = random_colour(rng)
    return colour


GROUND_KINDS = ("solid", "gradient", "noise")


def draw_background(rng: np.random.Generator, size: int, avoid: np.ndarray | None = None,
                    width: int | None = None) -> np.ndarray:
    """(size, width or size, 3) float image in [0, 1]."""
    return draw_ground(rng, size, avoid, width)[0]


def draw_ground(rng: np.random.Generator, size: int, avoid: np.ndarray | None = None,
                width: int | None = None) -> tuple[np.ndarray, int]:
    """A background and its kind (an index into GROUND_KINDS)."""
    width = width or size
    kind = int(rng.integers(3))
    base = contrasting_colour(rng, avoid)
    if kind == 0:
        return np.broadcast_to(base, (size, width, 3)).copy(), kind
    if kind == 1:
        return linear_gradient(rng, size, width, base, contrasting_colour(rng, avoid)), kind
    return smooth_noise(rng, size, width, base, amplitude=rng.uniform(0.08, 0.25)), kind


def linear_gradient(rng, size, width, start, end) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:width]
    proj = (xx / max(width - 1, 1) - 0.5) * np.cos(angle) + (yy / max(size - 1, 1) - 0.5) * np.sin(angle)
    t = (proj - proj.min()) / max(np.ptp(proj), 1e-9)
    return start * (1 - t[..., None]) + end * t[..., None]


def smooth_noise(rng, size, width, base, amplitude) -> np.ndarray:
    """Low-frequency coloured noise around ``base``: a small random grid upsampled bicubically."""
    cells = int(rng.integers(3, 9))
    grid = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
    channels = [np.asarray(Image.fromarray(grid[..., c], mode="F").resize((width, size), Image.Resampling.BICUBIC))
                for c in range(3)]
    return np.clip(base + amplitude * np.stack(channels, axis=-1), 0, 1)
