"""Things an image search for "bowl" or "vase" also returns that are clearly not pots.

Six kinds, cycled by index so they are spread evenly: box (a shaded cube), ball (a
shaded sphere), text card, texture, random polygon, landscape. Each draws on the same
backgrounds as the pots, so the background is no cue either. Images are (H, W, 3) uint8.
"""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stages.demo.backgrounds import contrasting_colour, draw_background, random_colour

WORDS = ("SALE", "NEW", "shop now", "free shipping", "kitchen", "home decor", "gift ideas",
         "50% off", "best price", "ceramics", "handmade", "top 10", "recipe", "DIY")


def _rgb8(colour: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(np.asarray(colour) * 255, 0, 255))


def _glaze(rng: np.random.Generator) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.35, 0.95)))


def draw_box(rng, size) -> np.ndarray:
    """A cube seen from above at an angle: three faces lit differently."""
    colour = _glaze(rng)
    img = Image.fromarray((draw_background(rng, size, avoid=colour) * 255).astype(np.uint8))
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    half = rng.uniform(0.15, 0.3) * size
    turn = rng.uniform(0, np.pi / 2)
    depth = rng.uniform(0.3, 0.6)  # how much of the top face shows
    corner = [np.array([np.cos(turn + k * np.pi / 2), np.sin(turn + k * np.pi / 2) * depth]) * half for k in range(4)]
    top = [(cx + p[0], cy - half * 0.8 + p[1]) for p in corner]
    drop = half * rng.uniform(1.0, 1.6)
    lows = sorted(range(4), key=lambda k: -corner[k][1])[:3]  # the three front-most corners
    left, mid, right = sorted(lows, key=lambda k: corner[k][0])
    face = lambda a, b: [top[a], top[b], (top[b][0], top[b][1] + drop), (top[a][0], top[a][1] + drop)]
    draw = ImageDraw.Draw(img)
    draw.polygon(face(left, mid), fill=_rgb8(colour * rng.uniform(0.45, 0.7)))
    draw.polygon(face(mid, right), fill=_rgb8(colour * rng.uniform(0.7, 0.9)))
    draw.polygon(top, fill=_rgb8(np.clip(colour * 1.15, 0, 1)))
    return np.asarray(img)


def draw_ball(rng, size) -> np.ndarray:
    """A Lambert + specular shaded sphere."""
    colour = _glaze(rng)
    image = draw_background(rng, size, avoid=colour)
    radius = rng.uniform(0.15, 0.35) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    nx, ny = (xx - cx) / radius, (cy - yy) / radius
    inside = nx ** 2 + ny ** 2 < 1
    nz = np.sqrt(np.clip(1 - nx ** 2 - ny ** 2, 0, None))
    light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(0.1, 0.8), 1.0])
    light /= np.linalg.norm(light)
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, None)
    half = (light + [0, 0, 1]) / np.linalg.norm(light + [0, 0, 1])  # Blinn half-vector, camera on +z
    spec = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0, None) ** 30
    shade = colour * (0.25 + 0.75 * lambert[..., None]) + 0.4 * spec[..., None]
    image[inside] = np.clip(shade[inside], 0, 1)
    return (image * 255).astype(np.uint8)


def draw_text_card(rng, size) -> np.ndarray:
    """A flat card with a few words on it: an advert or a screenshot."""
    paper = random_colour(rng)
    img = Image.new("RGB", (size, size), _rgb8(paper))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    ink = _rgb8(contrasting_colour(rng, paper))
    lines = int(rng.integers(2, 6))
    for k in range(lines):
        word = WORDS[int(rng.integers(len(WORDS)))]
        draw.text((rng.uniform(1, size * 0.3), 2 + k * size / lines), word, fill=ink, font=font)
    if rng.random() < 0.5:
        draw.rectangle((1, 1, size - 2, size - 2), outline=ink)
    return np.asarray(img)


def draw_texture(rng, size) -> np.ndarray:
    """Stripes or a checkerboard at a random angle and period."""
    a, b = random_colour(rng), random_colour(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(3, size / 4)
    u = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    w = (-xx * np.sin(angle) + yy * np.cos(angle)) / period
    pattern = np.floor(u) % 2 if rng.random() < 0.5 else (np.floor(u) + np.floor(w)) % 2
    image = a * pattern[..., None] + b * (1 - pattern[..., None])
    return (np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1) * 255).astype(np.uint8)


def draw_polygons(rng, size) -> np.ndarray:
    """A few random filled polygons (flat colours, straight edges)."""
    img = Image.fromarray((draw_background(rng, size) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(3, 8))
        points = [tuple(p) for p in rng.uniform(0.05, 0.95, (n, 2)) * size]
        draw.polygon(points, fill=_rgb8(random_colour(rng)))
    return np.asarray(img)


def draw_landscape(rng, size) -> np.ndarray:
    """Sky gradient, a mountain ridge, a ground band."""
    sky_top = np.array(colorsys.hsv_to_rgb(rng.uniform(0.5, 0.7), rng.uniform(0.3, 0.8), rng.uniform(0.6, 1)))
    sky_low = np.clip(sky_top + rng.uniform(0.1, 0.3), 0, 1)
    t = np.linspace(0, 1, size)[:, None, None]
    image = np.broadcast_to(sky_top * (1 - t) + sky_low * t, (size, size, 3)).copy()
    xs = np.arange(size)
    # a ridge line from a few sines: smooth at any size, unlike a per-pixel random walk
    freqs, phases, amps = rng.uniform(0.5, 4, 4), rng.uniform(0, 2 * np.pi, 4), rng.uniform(0.02, 0.08, 4)
    waves = amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * xs[None, :] / size + phases[:, None])
    ridge = size * (rng.uniform(0.35, 0.55) + waves.sum(axis=0))
    ground = size * rng.uniform(0.7, 0.85)
    rows = np.arange(size)[:, None]
    mountain = np.array(colorsys.hsv_to_rgb(rng.uniform(0.55, 0.8), rng.uniform(0.1, 0.4), rng.uniform(0.25, 0.5)))
    grass = np.array(colorsys.hsv_to_rgb(rng.uniform(0.15, 0.35), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.7)))
    image[rows >= ridge[None, xs]] = mountain
    image[(rows >= ground).repeat(size, axis=1)] = grass
    return (image * 255).astype(np.uint8)


DISTRACTOR_KINDS = {"box": draw_box, "ball": draw_ball, "text_card": draw_text_card,
                    "texture": draw_texture, "polygons": draw_polygons, "landscape": draw_landscape}
