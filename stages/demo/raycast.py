"""Ray-cast a surface of revolution under an orthographic camera, vectorised over pixels.

World frame: x right, y up (the pot's axis), z towards the camera. The camera looks
down at ``elevation`` e, so a world point projects to the object plane as
``u = x``, ``v = y cos e - z sin e`` and lies at ``depth = z cos e + y sin e`` (larger is
closer). The solid is bounded by the outer wall, the rim annulus, the inner wall and
the floor; the visible point of a pixel is the closest hit over all of them.

Each wall is a stack of rings (levels). A ring's front (z > 0) or back half traces a
curve v(u); between two neighbouring levels it sweeps a band. On one half of a wall,
two points on the same ray satisfy z2 - z1 = (y2 - y1) cot e (front) and therefore
the higher one is always closer, so per half the hit is simply the top-most band that
covers the pixel: no sorting, only a (levels, pixels) boolean and an argmax.
"""
from __future__ import annotations

import numpy as np

from stages.demo import shapes

INTERIOR_SHADE = 0.55  # the inside gets less light: a cheap stand-in for occlusion


def cast_pot(fields: np.ndarray, view, u: np.ndarray, v: np.ndarray, levels: int = 32):
    """Shade the pot at object-plane points (u, v) (any equal shapes): RGB (..., 3) and coverage (...)."""
    shape = u.shape
    u, v = u.reshape(-1), v.reshape(-1)
    outer = shapes.outer_knots(fields)
    inner = shapes.inner_knots(fields)
    cos_e, sin_e = np.cos(view.elevation), np.sin(view.elevation)
    height, floor_y = outer[2][-1], inner[2][0]
    rgb = np.zeros((u.size, 3))
    alpha = np.zeros(u.size)
    # only pixels inside the pot's object-plane bounding box do the expensive work
    r_max = float(np.max(outer[1])) * 1.05
    near = (np.abs(u) <= r_max) & (v >= -r_max * sin_e) & (v <= height * cos_e + r_max * sin_e)
    idx = np.flatnonzero(near)
    if idx.size:
        hit, colour = _cast(outer, inner, height, floor_y, view, u[idx], v[idx], cos_e, sin_e, levels)
        rgb[idx], alpha[idx] = colour, hit
    return rgb.reshape(*shape, 3), alpha.reshape(shape)


def _cast(outer, inner, height, floor_y, view, u, v, cos_e, sin_e, levels):
    """Closest hit over all surfaces for N points: coverage (N,) and RGB (N, 3)."""
    y_out = np.linspace(0.0, height, levels)
    y_in = np.linspace(floor_y, height, max(levels // 2, 8))
    u, v = u.astype(np.float32), v.astype(np.float32)
    candidates = [
        *_wall_hits(u, v, y_out, *shapes.hermite_profile(*outer, y_out), cos_e, sin_e, inward=False),
        _disk_hits(u, v, height, inner[1][-1], outer[1][-1], cos_e, sin_e, inward=False),  # rim annulus
    ]
    # the inside (inner wall, floor) is seen only through the mouth: cast those rays alone
    mouth = _disk_hits(u, v, height, 0.0, inner[1][-1], cos_e, sin_e, inward=True)["hit"]
    if mouth.any():
        um, vm = u[mouth], v[mouth]
        inside = [*_wall_hits(um, vm, y_in, *shapes.hermite_profile(*inner, y_in), cos_e, sin_e, inward=True),
                  _disk_hits(um, vm, floor_y, 0.0, inner[1][0], cos_e, sin_e, inward=True)]  # floor
        candidates += [_scatter(hits, mouth) for hits in inside]
    depth = np.stack([np.where(c["hit"], c["depth"], -np.inf) for c in candidates])  # (surfaces, N)
    best = np.argmax(depth, axis=0)
    hit = np.isfinite(depth.max(axis=0))
    cols = np.arange(u.size)
    rel_y = np.stack([c["y"] for c in candidates])[best, cols] / height
    inward = np.stack([c["inward"] for c in candidates])[best, cols]
    normal = np.stack([c["normal"] for c in candidates])[best, cols]      # (N, 3)
    return hit.astype(np.float64), _shade(normal, rel_y, inward, view, cos_e, sin_e)


def _scatter(hits: dict, mask: np.ndarray) -> dict:
    """Hits computed for the points in ``mask`` spread back to all N points (misses elsewhere)."""
    full = {}
    for key, values in hits.items():
        out = np.zeros((mask.size, *values.shape[1:]), dtype=values.dtype)
        out[mask] = values
        full[key] = out
    return full


def _wall_hits(u, v, y, r, dr, cos_e, sin_e, inward):
    """Hits on the front and the back half of a wall given as rings (y, r, dr/dy) at K levels."""
    y, r, dr = y.astype(np.float32), r.astype(np.float32), dr.astype(np.float32)
    reach = r[:, None] ** 2 - u[None, :] ** 2                      # (K, N)
    s = np.sqrt(np.maximum(reach, 0))
    inside = reach > 0
    inside = inside[:-1] | inside[1:]                               # (K-1, N) band reaches u
    ycos = (y * np.float32(cos_e))[:, None]
    s *= np.float32(sin_e)
    return [_half_hits(u, v, y, r, dr, ycos - side * s, inside, side, cos_e, sin_e, inward)
            for side in (+1, -1)]


def _half_hits(u, v, y, r, dr, vk, inside, side, cos_e, sin_e, inward):
    """Top-most band of one half (side +1 front, -1 back): the closest hit on that half."""
    above = v[None, :] > vk                                          # (K, N)
    cover = (above[:-1] != above[1:]) & inside                       # v between v_k and v_k+1
    k = cover.shape[0] - 1 - np.argmax(cover[::-1], axis=0)         # top-most covering band
    cols = np.arange(u.size)
    any_hit = cover[k, cols]                                         # argmax gives 0 when none covers
    v0, v1 = vk[k, cols], vk[k + 1, cols]
    gap = v1 - v0
    t = np.clip((v - v0) / np.where(np.abs(gap) > 1e-9, gap, 1), 0, 1)
    yy = y[k] + t * (y[k + 1] - y[k])
    rr = r[k] + t * (r[k + 1] - r[k])
    slope = dr[k] + t * (dr[k + 1] - dr[k])
    any_hit &= rr * rr >= u * u                                      # silhouette at the interpolated radius
    z = side * np.sqrt(np.maximum(rr ** 2 - u ** 2, 0))
    normal = np.stack([u, -rr * slope, z], axis=1)                   # outward, unnormalised
    if inward:
        normal = -normal
    return {"hit": any_hit, "depth": z * cos_e + yy * sin_e, "y": yy, "normal": _unit(normal),
            "inward": np.full(u.size, inward)}


def _disk_hits(u, v, y, r_lo, r_hi, cos_e, sin_e, inward):
    """Horizontal annulus r_lo <= radius <= r_hi at height y, facing up."""
    z = (y * cos_e - v) / sin_e
    rad2 = u ** 2 + z ** 2
    normal = np.zeros((u.size, 3))
    normal[:, 1] = 1.0
    return {"hit": (rad2 >= r_lo ** 2) & (rad2 <= r_hi ** 2), "depth": z * cos_e + y * sin_e,
            "y": np.full(u.size, y), "normal": normal, "inward": np.full(u.size, inward)}


def _shade(normal, rel_y, inward, view, cos_e, sin_e):
    """Lambert + Blinn-Phong specular; glaze (or stripe) albedo by relative height. (N, 3)"""
    to_camera = np.array([0.0, sin_e, cos_e])
    half = _unit(view.light + to_camera)
    diffuse = np.clip(normal @ view.light, 0, None)
    spec = view.specular * np.clip(normal @ half, 0, None) ** view.shininess
    albedo = np.broadcast_to(view.glaze, normal.shape).copy()
    if view.stripe is not None:
        low, high, other = view.stripe
        albedo[(rel_y >= low) & (rel_y <= high)] = other
    light = view.ambient + (1 - view.ambient) * diffuse
    light = np.where(inward, light * INTERIOR_SHADE, light)
    spec = np.where(inward, spec * INTERIOR_SHADE, spec)
    return np.clip(albedo * light[:, None] + spec[:, None], 0, 1)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)
