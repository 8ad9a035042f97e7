"""Pot shapes as a borges-style ``.fields`` vector, and the radius profiles built from it.

A ``.fields`` vector is 23 control points x (type, x, y), type 0 = flat (a corner),
1 = smooth: 7 points of a guide curve, then 16 of a closed profile curve. Here the
guide curve is the pot's axis, marked at the heights of its key levels (foot, foot
top, belly, shoulder, neck, lip, rim), and the profile curve runs from the bottom of
the axis out along the foot, up the outer wall (7 points), across the rim (2) and
down the inner wall to the floor on the axis (7). Coordinates are normalised so the
pot's larger extent (height, or width = 2 x the largest radius) is 1: x is a radius
in [0, 0.5], y a height in [0, 1]. The renderer reads only these fields, so the
fields fully determine the pot's shape in the image.
"""
from __future__ import annotations

import numpy as np

N_GUIDE, N_PROFILE = 7, 16
N_POINTS = N_GUIDE + N_PROFILE
FIELDS_LEN = N_POINTS * 3  # 69
CLASSES = ("bowl", "vase")
FLAT, SMOOTH = 0.0, 1.0

# Profile layout (indices into the 16 profile points).
OUTER = slice(1, 8)    # foot, foot top, belly, shoulder, neck, lip base, rim outer (y rising)
INNER = slice(8, 16)   # rim inner, lip base, neck, shoulder, belly, foot, floor edge, floor axis


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def draw_bowl(rng: np.random.Generator) -> dict:
    """Wide and short, widest at (or near) the rim, open: width / height in ~[1.8, 3.2]."""
    h = 1.0
    rim = h * _u(rng, 0.9, 1.6)
    foot = rim * _u(rng, 0.28, 0.5)
    belly = foot + (rim - foot) * _u(rng, 0.55, 0.85)
    shoulder = belly + (rim - belly) * _u(rng, 0.55, 0.9)
    return {"height": h, "foot": foot, "foot_top": foot * _u(rng, 0.9, 1.0),
            "foot_h": h * _u(rng, 0.04, 0.12), "belly": belly, "belly_y": h * _u(rng, 0.3, 0.5),
            "shoulder": shoulder, "shoulder_y": h * _u(rng, 0.62, 0.78),
            "neck": rim * _u(rng, 0.96, 1.0), "neck_y": h * _u(rng, 0.84, 0.9),
            "lip": rim, "lip_h": h * _u(rng, 0.02, 0.05),
            "wall": rim * _u(rng, 0.04, 0.07), "sharp_shoulder": bool(rng.random() < 0.15)}


def draw_vase(rng: np.random.Generator) -> dict:
    """Tall with a belly, a narrower neck and a flared lip: width / height in ~[0.4, 0.75]."""
    h = 1.0
    belly = h * _u(rng, 0.2, 0.37)
    neck = belly * _u(rng, 0.3, 0.55)
    return {"height": h, "foot": belly * _u(rng, 0.45, 0.8), "foot_top": None,
            "foot_h": h * _u(rng, 0.02, 0.06), "belly": belly, "belly_y": h * _u(rng, 0.25, 0.48),
            "shoulder": belly * _u(rng, 0.6, 0.9), "shoulder_y": h * _u(rng, 0.58, 0.7),
            "neck": neck, "neck_y": h * _u(rng, 0.78, 0.87),
            "lip": neck * _u(rng, 1.1, 1.6), "lip_h": h * _u(rng, 0.03, 0.06),
            "wall": belly * _u(rng, 0.06, 0.1), "sharp_shoulder": bool(rng.random() < 0.2)}


SHAPE_DRAWERS = {"bowl": draw_bowl, "vase": draw_vase}


def shape_to_fields(shape: dict) -> np.ndarray:
    """Build the (23, 3) control points from drawn shape factors, normalised to extent 1."""
    s = dict(shape)
    if s["foot_top"] is None:
        s["foot_top"] = s["foot"] * 0.95
    h, t = s["height"], s["wall"]
    levels = [0.0, s["foot_h"], s["belly_y"], s["shoulder_y"], s["neck_y"], h - s["lip_h"], h]
    radii = [s["foot"], s["foot_top"], s["belly"], s["shoulder"], s["neck"], s["lip"], s["lip"]]
    shoulder_type = FLAT if s["sharp_shoulder"] else SMOOTH
    outer_types = [FLAT, FLAT, SMOOTH, shoulder_type, SMOOTH, FLAT, FLAT]
    guide = [(FLAT, 0.0, y) for y in levels]
    outer = list(zip(outer_types, radii, levels))
    floor_y = s["foot_h"] + t
    inner_r = [max(r - t, 0.25 * r) for r in radii]
    inner = ([(FLAT, inner_r[6], h), (FLAT, inner_r[5], levels[5])]
             + [(typ, inner_r[i], max(levels[i], floor_y + 0.01 * (i - 1)))
                for i, typ in ((4, SMOOTH), (3, shoulder_type), (2, SMOOTH))]
             + [(SMOOTH, inner_r[1], floor_y + 0.004), (FLAT, inner_r[1] * 0.8, floor_y), (FLAT, 0.0, floor_y)])
    points = np.array(guide + [(FLAT, 0.0, 0.0)] + outer + inner, dtype=np.float64)  # (23, 3)
    extent = max(h, 2 * max(radii))
    points[:, 1:] /= extent
    return points


def outer_knots(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(types, radii, heights) of the outer wall, heights rising: 7 knots each."""
    profile = np.asarray(fields, dtype=np.float64).reshape(N_POINTS, 3)[N_GUIDE:]
    knots = profile[OUTER]
    return knots[:, 0], knots[:, 1], knots[:, 2]


def inner_knots(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(types, radii, heights) of the inner wall from the floor edge up to the rim (axis point dropped)."""
    profile = np.asarray(fields, dtype=np.float64).reshape(N_POINTS, 3)[N_GUIDE:]
    knots = profile[INNER][:-1][::-1]
    return knots[:, 0], knots[:, 1], knots[:, 2]


def hermite_profile(types: np.ndarray, radii: np.ndarray, heights: np.ndarray,
                    y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radius r(y) and slope dr/dy at heights ``y`` (any shape) through the knots.

    Smooth knots get Catmull-Rom tangents; at a flat knot each segment uses its own
    secant, so a flat knot is a corner and a segment between two flat knots is straight.
    """
    ky = np.maximum.accumulate(heights) + np.arange(len(heights)) * 1e-6  # strictly rising
    secant = np.diff(radii) / np.diff(ky)                                 # (n-1,)
    seg = np.clip(np.searchsorted(ky, y, side="right") - 1, 0, len(ky) - 2)
    left, right = _segment_tangents(types, radii, ky, secant)
    y0, dy = ky[seg], ky[seg + 1] - ky[seg]
    t = np.clip((y - y0) / dy, 0.0, 1.0)
    m0, m1 = left[seg] * dy, right[seg] * dy
    p0, p1 = radii[seg], radii[seg + 1]
    t2, t3 = t * t, t * t * t
    r = (2 * t3 - 3 * t2 + 1) * p0 + (t3 - 2 * t2 + t) * m0 + (-2 * t3 + 3 * t2) * p1 + (t3 - t2) * m1
    dr = ((6 * t2 - 6 * t) * p0 + (3 * t2 - 4 * t + 1) * m0 + (-6 * t2 + 6 * t) * p1 + (3 * t2 - 2 * t) * m1) / dy
    return np.maximum(r, 1e-3), dr


def _segment_tangents(types, radii, ky, secant):
    """Tangent at the start (left) and end (right) of each segment, by knot type."""
    n = len(radii)
    tangent = np.empty(n)
    tangent[0], tangent[-1] = secant[0], secant[-1]
    tangent[1:-1] = (radii[2:] - radii[:-2]) / (ky[2:] - ky[:-2])  # Catmull-Rom
    smooth = types > 0.5
    left = np.where(smooth[:-1], tangent[:-1], secant)
    right = np.where(smooth[1:], tangent[1:], secant)
    return left, right
