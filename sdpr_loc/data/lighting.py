"""Lighting conditions and the camera's response: day, dusk and night.

Static light (sun with cast shadows, sky with ambient occlusion, street lamps) is baked once per
world and condition into light maps: one irradiance texel grid per quad, like a game engine.
Shadows are exact projections of the boxes along the sun direction onto each receiving plane
(convex hulls, anti-aliased), so rendering a frame costs one texture lookup for all static
light. Dynamic light (the vehicle's headlight cone with 1/d^2 fall-off) is computed per pixel.

The sensor: auto exposure towards a target mean intensity (with lag and per-frame jitter, so
exposure changes over a drive), a display gamma, vignetting, and noise with a read (constant)
and a shot (signal-proportional variance) part, quantised to 8 bit.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

__all__ = ["Condition", "CONDITIONS", "get_condition", "Lightmaps", "bake_lightmaps",
           "headlight_irradiance", "solve_gain", "sensor_noise_std"]


@dataclass(frozen=True)
class Condition:
    """One lighting condition. Irradiances are in linear units where full sun on a face turned
    to it gives ``sun``; the image is ``clip(gain * radiance) ** (1 / gamma)`` plus noise.

    target_mean: auto exposure aims the mean of the (noise-free) image at this, in [0, 1].
    read_noise: noise std in image units; shot_noise: extra variance per unit image intensity.
    exposure_jitter: std of the per-frame log-gain jitter; ae_rate: fraction of the log-gain
    error corrected per frame (1 = instant).
    """

    name: str
    sun: float = 1.0
    sun_elevation_deg: float = 45.0
    sun_azimuth_deg: float = 130.0
    sky: float = 0.35
    sky_zenith: float = 0.9
    sky_horizon: float = 1.3
    lamps: float = 0.0
    headlight: float = 0.0
    headlight_inner_deg: float = 12.0
    headlight_outer_deg: float = 32.0
    fog_distance: float = 600.0
    target_mean: float = 0.45
    gain_limits: tuple[float, float] = (0.05, 50.0)
    gamma: float = 2.2
    read_noise: float = 0.004
    shot_noise: float = 0.0004
    exposure_jitter: float = 0.04
    ae_rate: float = 0.35
    vignetting: float = 0.25

    def with_(self, **kw) -> "Condition":
        return replace(self, **kw)

    @property
    def sun_direction(self) -> np.ndarray:
        """Unit vector from the ground towards the sun (world frame, z up)."""
        el, az = np.radians(self.sun_elevation_deg), np.radians(self.sun_azimuth_deg)
        return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


CONDITIONS: dict[str, Condition] = {
    "day": Condition("day"),
    "dusk": Condition("dusk", sun=0.45, sun_elevation_deg=7.0, sun_azimuth_deg=250.0, sky=0.1,
                      sky_zenith=0.12, sky_horizon=0.4, lamps=1.0, headlight=1.5,
                      fog_distance=300.0, target_mean=0.3, read_noise=0.01, shot_noise=0.002,
                      exposure_jitter=0.05),
    "night": Condition("night", sun=0.0, sky=0.003, sky_zenith=0.002, sky_horizon=0.008,
                       lamps=6.0, headlight=12.0, fog_distance=150.0, target_mean=0.15,
                       gain_limits=(0.05, 400.0), read_noise=0.025, shot_noise=0.006,
                       exposure_jitter=0.03, vignetting=0.35),
}


def get_condition(condition: str | Condition) -> Condition:
    if isinstance(condition, Condition):
        return condition
    try:
        return CONDITIONS[str(condition)]
    except KeyError:
        raise ValueError(f"unknown lighting condition {condition!r}; "
                         f"expected one of {', '.join(CONDITIONS)}") from None


# --------------------------------------------------------------------------------------------
# light maps
# --------------------------------------------------------------------------------------------
@dataclass
class Lightmaps:
    """Baked irradiance: ``ground`` image for the ground quad, ``atlas`` for all other quads.

    rect[q] = (x0, y0, w, h): texel ``(x0 + 1 + a * (w - 1), y0 + 1 + b * (h - 1))`` of the
    atlas (or of ``ground`` for the ground quad) holds the irradiance at ``origin + a u + b v``.
    """

    ground: np.ndarray
    atlas: np.ndarray
    rect: np.ndarray


def _texels(O, U, V, w, h):
    a = np.linspace(0.0, 1.0, w, dtype=np.float32)
    b = np.linspace(0.0, 1.0, h, dtype=np.float32)
    return (O.astype(np.float32) + a[None, :, None] * U.astype(np.float32)
            + b[:, None, None] * V.astype(np.float32))


def _shadow_polygon(corners: np.ndarray, O, N, Ud, Vd, s: np.ndarray, w: int, h: int):
    """Texel-space convex polygon of a box's shadow on a plane, or None.

    Points of the box on the sun side of the plane project along -s; box edges crossing the
    plane add their crossing points, which makes the hull exact for the clipped box.
    """
    dist = (corners - O) @ N
    if not np.any(dist > 1e-6):
        return None
    cos = float(N @ s)
    pts = [corners[dist > 0] - np.outer(dist[dist > 0] / cos, s)]
    edges = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
             (0, 4), (1, 5), (2, 6), (3, 7))
    for i, j in edges:
        if (dist[i] > 0) != (dist[j] > 0):
            t = dist[i] / (dist[i] - dist[j])
            pts.append((corners[i] + t * (corners[j] - corners[i]))[None])
    P = np.concatenate(pts) - O
    ab = np.stack([P @ Ud * (w - 1), P @ Vd * (h - 1)], -1)
    if (ab[:, 0].max() < -1 or ab[:, 0].min() > w or ab[:, 1].max() < -1
            or ab[:, 1].min() > h):
        return None
    return ab


def _pack(sizes: list[tuple[int, int]], width: int = 4096) -> tuple[np.ndarray, int]:
    """Shelf packing of (w, h) rectangles (each with a 1-texel border) -> (x0, y0), height."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i][1])
    pos = np.zeros((len(sizes), 2), np.int64)
    x = y = row_h = 0
    for i in order:
        w, h = sizes[i][0] + 2, sizes[i][1] + 2
        if x + w > width:
            x, y, row_h = 0, y + row_h, 0
        pos[i] = (x, y)
        x += w
        row_h = max(row_h, h)
    return pos, y + row_h


def bake_lightmaps(world, condition: Condition, res: float = 0.25, ground_res: float = 0.15,
                   lamp_range: float = 35.0) -> Lightmaps:
    """Irradiance per quad texel: sun (cos * shadow) + sky (view factor * occlusion) + lamps."""
    cw = world.compiled()
    Q = len(cw["O"])
    s = condition.sun_direction
    boxes = world.boxes
    bc = np.stack([b.corners() for b in boxes]) if boxes else np.zeros((0, 8, 3))
    lamps = np.array(world.lamps) if world.lamps else np.zeros((0, 3))
    sizes = []
    for q in range(Q):
        r = ground_res if cw["ground"][q] else res
        cap = 2048 if cw["ground"][q] else 512
        w = int(np.clip(np.ceil(np.linalg.norm(cw["U"][q]) / r) + 1, 2, cap))
        h = int(np.clip(np.ceil(np.linalg.norm(cw["V"][q]) / r) + 1, 2, cap))
        sizes.append((w, h))
    others = [q for q in range(Q) if not cw["ground"][q]]
    pos, height = _pack([sizes[q] for q in others])
    atlas = np.zeros((max(height, 1), 4096), np.float32)
    rect = np.zeros((Q, 4), np.int64)
    ground_img = np.zeros((1, 1), np.float32)
    for k, q in enumerate(others):
        rect[q] = (pos[k][0], pos[k][1], *sizes[q])
    for q in np.flatnonzero(cw["ground"]):
        rect[q] = (0, 0, *sizes[q])
    for q in range(Q):
        O, U, V, N = cw["O"][q], cw["U"][q], cw["V"][q], cw["N"][q]
        Ud, Vd = cw["Ud"][q], cw["Vd"][q]
        w, h = sizes[q]
        is_ground = bool(cw["ground"][q])
        P = _texels(O, U, V, w, h)
        # sky: view factor of the upper hemisphere, darkened near the ground and near boxes
        E = np.full((h, w), condition.sky * (0.5 + 0.5 * N[2]), np.float32)
        if is_ground and len(boxes):
            occ = np.full((h, w), 255, np.uint8)
            for c in bc:
                ab = (c[:4] - O) @ np.stack([Ud * (w - 1), Vd * (h - 1)], 1)
                cv2.fillConvexPoly(occ, np.round(ab * 16).astype(np.int32), 0, cv2.LINE_AA, 4)
            dist = cv2.distanceTransform(occ, cv2.DIST_L2, 5) * float(np.linalg.norm(U)) / (w - 1)
            E *= 1.0 - 0.5 * np.exp(-dist / 1.0)
        elif not is_ground:
            E *= 1.0 - 0.35 * np.exp(-np.maximum(P[..., 2], 0.0) / 0.8)
        # sun with cast shadows
        cos = float(N @ s)
        if condition.sun > 0 and cos > 1e-4:
            vis = np.full((h, w), 255, np.uint8)
            if len(boxes):
                # conservative pre-filter on all boxes at once: some corner in front of the
                # plane and the projected bounding box overlapping the quad
                dist = (bc - O) @ N
                proj = bc - dist[..., None] / cos * s
                a = (proj - O) @ Ud
                b = (proj - O) @ Vd
                cand = ((dist > 1e-6).any(1) & (a.max(1) > 0) & (a.min(1) < 1)
                        & (b.max(1) > 0) & (b.min(1) < 1))
                own = int(cw["box"][q])
                for i in np.flatnonzero(cand):
                    if i == own:
                        continue
                    ab = _shadow_polygon(bc[i], O, N, Ud, Vd, s, w, h)
                    if ab is None:
                        continue
                    hull = cv2.convexHull(np.round(ab * 16).astype(np.int32))
                    cv2.fillConvexPoly(vis, hull, 0, cv2.LINE_AA, 4)
            vis_f = cv2.GaussianBlur(vis.astype(np.float32) / 255.0, (3, 3), 0.7)
            E += condition.sun * cos * vis_f
        # street lamps: point lights, inverse square, Lambert (no shadows)
        if condition.lamps > 0 and len(lamps):
            near = np.abs((lamps - O) @ N) < lamp_range
            for L in lamps[near]:
                ac, bcn = float((L - O) @ Ud), float((L - O) @ Vd)
                ra, rb = lamp_range * np.linalg.norm(Ud), lamp_range * np.linalg.norm(Vd)
                i0, i1 = int(np.floor((ac - ra) * (w - 1))), int(np.ceil((ac + ra) * (w - 1))) + 1
                j0, j1 = int(np.floor((bcn - rb) * (h - 1))), int(np.ceil((bcn + rb) * (h - 1))) + 1
                i0, j0, i1, j1 = max(i0, 0), max(j0, 0), min(i1, w), min(j1, h)
                if i0 >= i1 or j0 >= j1:
                    continue
                D = L.astype(np.float32) - P[j0:j1, i0:i1]
                d2 = np.maximum((D * D).sum(-1), 1.0)  # no blinding hot spots
                lam = np.maximum(D @ N.astype(np.float32), 0.0) / np.sqrt(d2)
                E[j0:j1, i0:i1] += condition.lamps * lam / d2
        padded = cv2.copyMakeBorder(E, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        if is_ground:
            ground_img = padded
        else:
            x0, y0 = rect[q][:2]
            atlas[y0:y0 + h + 2, x0:x0 + w + 2] = padded
    return Lightmaps(ground=ground_img, atlas=atlas, rect=rect)


# --------------------------------------------------------------------------------------------
# dynamic light and sensor
# --------------------------------------------------------------------------------------------
HEADLIGHT_POSITION = np.array([0.0, 0.75, 0.3])  # camera frame: below and ahead of the camera
HEADLIGHT_PITCH_DEG = 3.0  # cone axis tilted down from the optical axis


def headlight_irradiance(P: np.ndarray, N: np.ndarray, condition: Condition) -> np.ndarray:
    """Irradiance of the vehicle's headlight at camera-frame points P (n, 3) with normals N."""
    if condition.headlight <= 0:
        return np.zeros(len(P), np.float32)
    pitch = np.radians(HEADLIGHT_PITCH_DEG)
    ay, az = np.float32(np.sin(pitch)), np.float32(np.cos(pitch))
    lx, ly, lz = (np.float32(v) for v in HEADLIGHT_POSITION)
    Dx, Dy, Dz = P[:, 0] - lx, P[:, 1] - ly, P[:, 2] - lz
    dd = Dx * Dx + Dy * Dy + Dz * Dz
    dn = np.sqrt(dd) + np.float32(1e-6)
    cosax = (Dy * ay + Dz * az) / dn
    ci, co = np.cos(np.radians(condition.headlight_inner_deg)), np.cos(
        np.radians(condition.headlight_outer_deg))
    x = np.clip((cosax - np.float32(co)) * np.float32(1.0 / (ci - co)), 0.0, 1.0)
    cone = x * x * (3 - 2 * x)
    lam = np.maximum(-(N[:, 0] * Dx + N[:, 1] * Dy + N[:, 2] * Dz) / dn, 0.0)
    return (np.float32(condition.headlight) * cone * lam / np.maximum(dd, 1.0)).astype(np.float32)


def solve_gain(X: np.ndarray, target: float, limits: tuple[float, float]) -> float:
    """Gain k with mean(clip(k * X, 0, 1)) = target (bisection in log k; monotone in k)."""
    X = np.asarray(X, np.float32).reshape(-1)
    lo, hi = np.log(limits[0]), np.log(limits[1])
    if np.mean(np.clip(np.exp(hi) * X, 0, 1)) <= target:
        return float(np.exp(hi))
    if np.mean(np.clip(np.exp(lo) * X, 0, 1)) >= target:
        return float(np.exp(lo))
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if np.mean(np.clip(np.exp(mid) * X, 0, 1)) < target:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def sensor_noise_std(clean: np.ndarray, condition: Condition) -> np.ndarray:
    """Per-pixel noise std of an image with noise-free intensity ``clean`` (in [0, 1])."""
    return np.sqrt(condition.read_noise**2 + condition.shot_noise * np.clip(clean, 0, 1))
