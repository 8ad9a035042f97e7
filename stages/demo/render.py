"""Render pots "in the manner of the borges data": a profile revolved, shaded and placed.

``render_pot(seed, class_index, i, size)`` draws the shape factors of one bowl or vase,
builds its ``.fields`` vector (see ``shapes``), and ray-casts the surface of revolution
from the fields alone under an orthographic camera looking slightly down (so the rim
ellipse and, for open bowls, the inside show). Glaze colour, stripe, lighting,
background, scale, position and in-plane rotation vary per image, so neither colour
nor pixel position gives the class away; only the shape does. ``factors`` records what was
drawn, the ground included (its kind and mean colour): the ground covers most pixels, so a
VAE spends most of its code on it.

Everything comes from ``np.random.default_rng([seed, class_index, i, KIND_POT])``, so
an item renders the same whatever the order or the number of worker processes.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from stages.demo import shapes
from stages.demo.backgrounds import draw_ground
from stages.demo.raycast import cast_pot

KIND_POT = 0
SUPERSAMPLE = 2   # render at 2x and box-filter down: anti-aliased edges
LEVELS = 56       # rings the profile is sampled at, bottom to top
FACTOR_NAMES = ("height", "width", "belly_width", "belly_height", "neck_width", "rim_width",
                "foot_width", "glaze_hue", "glaze_saturation", "glaze_value", "stripe",
                "light_azimuth", "light_elevation", "view_elevation", "rotation", "scale", "x", "y",
                "ground_kind", "ground_hue", "ground_saturation", "ground_value")


@dataclass
class View:
    """Everything about one image except the pot's shape."""
    elevation: float      # camera pitch above the horizon, radians
    rotation: float       # in-plane rotation, radians (counter-clockwise)
    extent: float         # the pot's larger rotated bbox side, as a fraction of the image
    centre: tuple         # bbox centre in the image, fractions (x right, y down)
    light: np.ndarray     # (3,) unit vector towards the light, world (x right, y up, z to camera)
    ambient: float
    specular: float
    shininess: float
    glaze: np.ndarray     # (3,) RGB in [0, 1]
    stripe: tuple | None  # (y_low, y_high, RGB) band of another glaze, normalised heights


@dataclass
class Pot:
    image: np.ndarray     # (H, W, 3) uint8
    fields: np.ndarray    # (69,) float
    factors: dict         # name -> float, FACTOR_NAMES
    coverage: np.ndarray  # (H, W) float in [0, 1]: how much of each pixel the pot covers


def pot_rng(seed: int, class_index: int, i: int, kind: int = KIND_POT) -> np.random.Generator:
    return np.random.default_rng([seed, class_index, i, kind])


def render_pot(seed: int, class_index: int, i: int, size: int, kind: int = KIND_POT) -> Pot:
    """Render item ``i`` of class ``shapes.CLASSES[class_index]`` at ``size`` x ``size``.

    ``kind`` separates the random streams: corpus pots use KIND_POT; junk made from a
    pot that is not in the corpus (blurry, dark, ...) passes its own code.
    """
    rng = pot_rng(seed, class_index, i, kind)
    shape = shapes.SHAPE_DRAWERS[shapes.CLASSES[class_index]](rng)
    fields = shapes.shape_to_fields(shape)                     # (23, 3)
    view = draw_view(rng)
    background, ground_kind = draw_ground(rng, size, avoid=view.glaze)  # (H, W, 3) float in [0, 1]
    rgb, alpha, bbox = shade_pot(fields, view, size)
    image = rgb * alpha[..., None] + background * (1 - alpha[..., None])
    image = np.clip(image * 255 + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)
    factors = pot_factors(fields, view, bbox, ground_factors(background, ground_kind))
    return Pot(image, fields.reshape(-1), factors, alpha)


def draw_view(rng: np.random.Generator) -> View:
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.15, 0.9), rng.uniform(0.3, 0.95)
    glaze = np.array(colorsys.hsv_to_rgb(hue, sat, val))
    stripe = None
    if rng.random() < 0.35:
        low = rng.uniform(0.3, 0.8)
        other = colorsys.hsv_to_rgb((hue + rng.uniform(0.25, 0.75)) % 1, rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.9))
        stripe = (low, low + rng.uniform(0.04, 0.12), np.array(other))
    azimuth, light_elev = rng.uniform(-1.4, 1.4), rng.uniform(0.25, 1.2)
    light = np.array([np.sin(azimuth) * np.cos(light_elev), np.sin(light_elev), np.cos(azimuth) * np.cos(light_elev)])
    return View(elevation=rng.uniform(0.12, 0.5), rotation=np.deg2rad(rng.uniform(-20, 20)),
                extent=rng.uniform(0.5, 0.88), centre=(rng.random(), rng.random()), light=light,
                ambient=rng.uniform(0.2, 0.4), specular=rng.uniform(0.0, 0.5),
                shininess=rng.uniform(8, 60), glaze=glaze, stripe=stripe)


def ground_factors(background: np.ndarray, kind: int) -> dict:
    """The ground's kind and the HSV of its mean colour: what a gradient or noise ground shows."""
    hue, sat, val = colorsys.rgb_to_hsv(*background.reshape(-1, 3).mean(0))
    return {"ground_kind": kind, "ground_hue": hue, "ground_saturation": sat, "ground_value": val}


def pot_factors(fields: np.ndarray, view: View, bbox: dict, ground: dict) -> dict:
    """The generative factors drawn for this image, as plain floats (ground truth for a VAE)."""
    _, radii, heights = shapes.outer_knots(fields)
    hue, sat, val = colorsys.rgb_to_hsv(*view.glaze)
    az = np.arctan2(view.light[0], view.light[2])
    values = {"height": heights[-1], "width": 2 * radii.max(), "belly_width": 2 * radii[2],
              "belly_height": heights[2] / heights[-1], "neck_width": 2 * radii[4],
              "rim_width": 2 * radii[6], "foot_width": 2 * radii[0], "glaze_hue": hue,
              "glaze_saturation": sat, "glaze_value": val, "stripe": float(view.stripe is not None),
              "light_azimuth": az, "light_elevation": np.arcsin(view.light[1]),
              "view_elevation": view.elevation, "rotation": np.rad2deg(view.rotation),
              "scale": bbox["scale"], "x": bbox["x"], "y": bbox["y"], **ground}
    return {name: round(float(values[name]), 6) for name in FACTOR_NAMES}


def place(fields: np.ndarray, view: View, size: int) -> tuple[np.ndarray, dict]:
    """Affine map pixel -> object plane (u right, v up), and where the pot landed.

    Returns a (2, 3) matrix M with [u, v] = M @ [px, py, 1] for pixel centres at the
    internal (supersampled) resolution, and the placement factors (fractions of the image).
    """
    _, radii, heights = shapes.outer_knots(fields)
    y = np.linspace(0, heights[-1], 64)
    r, _ = shapes.hermite_profile(*shapes.outer_knots(fields), y)
    sin_e, cos_e = np.sin(view.elevation), np.cos(view.elevation)
    u_half = r.max()
    v_lo, v_hi = (y * cos_e - r * sin_e).min(), (y * cos_e + r * sin_e).max()
    c, s = np.cos(view.rotation), np.sin(view.rotation)
    rot = np.array([[c, -s], [s, c]])
    corners = rot @ np.array([[-u_half, u_half, u_half, -u_half], [v_lo, v_lo, v_hi, v_hi]])
    span = corners.max(axis=1) - corners.min(axis=1)            # rotated bbox (w, h), object units
    scale = view.extent / span.max()                            # image fractions per object unit
    half = span * scale / 2
    cx = half[0] + view.centre[0] * (1 - 2 * half[0])
    cy = half[1] + view.centre[1] * (1 - 2 * half[1])
    mid = rot @ np.array([0.0, (v_lo + v_hi) / 2])              # bbox centre, rotated object units
    n = size * SUPERSAMPLE
    # pixel (px, py) -> image fraction -> rotated object plane (y flips) -> object plane
    to_rot = np.array([[1 / (n * scale), 0, -cx / scale + mid[0]],
                       [0, -1 / (n * scale), cy / scale + mid[1]]])
    to_rot[:, 2] += to_rot[:, :2] @ np.array([0.5, 0.5])        # pixel centres
    matrix = rot.T @ to_rot
    return matrix, {"scale": scale, "x": cx, "y": cy}


def shade_pot(fields: np.ndarray, view: View, size: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Colour (H, W, 3) and coverage (H, W) in [0, 1] of the pot, at ``size``."""

    matrix, bbox = place(fields, view, size)
    n = size * SUPERSAMPLE
    py, px = np.mgrid[0:n, 0:n].astype(np.float32)
    u = matrix[0, 0] * px + matrix[0, 1] * py + matrix[0, 2]    # (n, n) object plane
    v = matrix[1, 0] * px + matrix[1, 1] * py + matrix[1, 2]
    rgb, alpha = cast_pot(fields, view, u, v)                   # (n, n, 3), (n, n)
    rgb = rgb.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3)
    alpha = alpha.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE)
    weight = alpha.sum(axis=(1, 3))
    # premultiplied box filter: edge pixels get the mean colour of the covered subpixels
    colour = (rgb * alpha[..., None]).sum(axis=(1, 3)) / np.maximum(weight, 1e-6)[..., None]
    return colour, weight / SUPERSAMPLE ** 2, bbox
