"""Stereo rendering of a :class:`~sdpr_loc.data.synth_world.World` by vectorised ray casting.

For every quad that survives culling (back faces, frustum), the pixels inside its projected
bounding box intersect their rays with the quad's plane in closed form; a z-buffer keeps the
nearest hit. Rays go through pixel centres (integer pixel coordinates), so the images follow
the pinhole model exactly: a point at camera coordinates (x, y, z) appears at
``u = fx x / z + cx``, ``v = fy y / z + cy`` in the left image and at ``u - fx * B / z`` in the
right one, whose centre is ``B`` metres along the left camera's x axis (rectified pair).

Shading: trilinear texture lookup (mip level from the pixel footprint), a procedural road
(distance field: asphalt, sidewalk, lane markings) on the ground, baked light maps, headlight,
fog, vignetting; then auto exposure, gamma, noise and 8-bit quantisation (see lighting.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdpr_loc.geometry.stereo import StereoCamera

from .lighting import (Condition, bake_lightmaps, get_condition, headlight_irradiance,
                       sensor_noise_std, solve_gain)
from .synth_world import TEXTURE_METRES, World
from .textures import remap_points

__all__ = ["Raster", "StereoRenderer", "NEAR"]

NEAR = 0.05  # metres


@dataclass
class Raster:
    """Per-pixel hit: quad id (-1 = sky), quad coordinates a, b and depth z (inf = sky)."""

    ids: np.ndarray
    a: np.ndarray
    b: np.ndarray
    depth: np.ndarray


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class StereoRenderer:
    """Renders rectified stereo pairs of a world under one lighting condition.

    camera: rectified model with width and height set. Poses are ``T_world_camera`` of the left
    optical frame (x right, y down, z forward). Light maps are baked on construction (about a
    second) and cached on the world per condition.
    """

    def __init__(self, world: World, camera: StereoCamera, condition: str | Condition = "day"):
        if camera.width is None or camera.height is None:
            raise ValueError("camera.width and camera.height must be set to render")
        self.world = world
        self.camera = camera
        self.cond = get_condition(condition)
        self.W, self.H = int(camera.width), int(camera.height)
        self.xs = ((np.arange(self.W) - camera.cx) / camera.fx).astype(np.float32)
        self.ys = ((np.arange(self.H) - camera.cy) / camera.fy).astype(np.float32)
        rn = np.sqrt(self.xs[None, :] ** 2 + self.ys[:, None] ** 2 + 1.0)
        self.ray_norm = rn.astype(np.float32)
        r2 = (self.xs[None, :] ** 2 + self.ys[:, None] ** 2)
        self.vignette = (1.0 - self.cond.vignetting * r2 / r2.max()).astype(np.float32)
        self.xlim = ((-0.5 - camera.cx) / camera.fx, (self.W - 0.5 - camera.cx) / camera.fx)
        self.ylim = ((-0.5 - camera.cy) / camera.fy, (self.H - 0.5 - camera.cy) / camera.fy)
        self.cw = world.compiled()
        self.atlas = world.atlas
        key = (self.cond.name, self.cond.sun, self.cond.sun_elevation_deg,
               self.cond.sun_azimuth_deg, self.cond.sky, self.cond.lamps)
        if key not in world._lightmaps:
            world._lightmaps[key] = bake_lightmaps(world, self.cond)
        self.lightmaps = world._lightmaps[key]
        self._gamma_atlas = None
        self._lm_coords = None

    # ----- geometry -----
    def raster(self, R: np.ndarray, C: np.ndarray) -> Raster:
        """Visible quad per pixel for a camera with rotation R (world <- camera) at centre C."""
        cw, H, W = self.cw, self.H, self.W
        cam = self.camera
        Oc = (cw["O"] - C) @ R
        Nc = cw["N"] @ R
        Udc = cw["Ud"] @ R
        Vdc = cw["Vd"] @ R
        P = (cw["corners"] - C) @ R  # (Q, 4, 3) camera frame
        x, y, z = P[..., 0], P[..., 1], P[..., 2]
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        facing = (Nc * Oc).sum(1) < 0
        outside = ((x - x1 * z > 0).all(1) | (x - x0 * z < 0).all(1)
                   | (y - y1 * z > 0).all(1) | (y - y0 * z < 0).all(1) | (z < NEAR).all(1))
        depth = np.full((H, W), np.inf, np.float32)
        ids = np.full((H, W), -1, np.int32)
        A = np.zeros((H, W), np.float32)
        B = np.zeros((H, W), np.float32)
        for q in np.flatnonzero(facing & ~outside):
            pts = P[q]
            if (pts[:, 2] < NEAR).any():  # clip the polygon at the near plane
                poly = []
                for i in range(4):
                    p, n = pts[i], pts[(i + 1) % 4]
                    if p[2] >= NEAR:
                        poly.append(p)
                    if (p[2] >= NEAR) != (n[2] >= NEAR):
                        t = (NEAR - p[2]) / (n[2] - p[2])
                        poly.append(p + t * (n - p))
                pts = np.array(poly)
            u = cam.fx * pts[:, 0] / pts[:, 2] + cam.cx
            v = cam.fy * pts[:, 1] / pts[:, 2] + cam.cy
            c0, c1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, W)
            r0, r1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, H)
            if c0 >= c1 or r0 >= r1:
                continue
            xs, ys = self.xs[c0:c1][None, :], self.ys[r0:r1][:, None]
            n, o, ud, vd = Nc[q], Oc[q], Udc[q], Vdc[q]
            with np.errstate(divide="ignore", invalid="ignore"):
                zq = float(n @ o) / (float(n[0]) * xs + float(n[1]) * ys + float(n[2]))
                a = zq * (float(ud[0]) * xs + float(ud[1]) * ys + float(ud[2])) - float(ud @ o)
                b = zq * (float(vd[0]) * xs + float(vd[1]) * ys + float(vd[2])) - float(vd @ o)
                dv = depth[r0:r1, c0:c1]
                m = (zq > NEAR) & (zq < dv) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
            if not m.any():
                continue
            np.copyto(dv, zq, where=m)
            np.copyto(ids[r0:r1, c0:c1], q, where=m)
            np.copyto(A[r0:r1, c0:c1], a, where=m)
            np.copyto(B[r0:r1, c0:c1], b, where=m)
        return Raster(ids, A, B, depth)

    def depth(self, T_world_camera: np.ndarray, side: str = "left") -> np.ndarray:
        """(H, W) depth (z in that camera's frame, inf where the ray hits nothing)."""
        R, C = self._pose(T_world_camera, side)
        return self.raster(R, C).depth

    def _pose(self, T: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"T_world_camera must be (4, 4), got {T.shape}")
        R, C = T[:3, :3], T[:3, 3].copy()
        if side == "right":
            C = C + R[:, 0] * self.camera.baseline
        elif side != "left":
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        return R, C

    # ----- shading -----
    def radiance(self, R: np.ndarray, C: np.ndarray, ras: Raster | None = None) -> np.ndarray:
        """(H, W) float32 linear scene radiance seen by the camera (before the sensor)."""
        if ras is None:
            ras = self.raster(R, C)
        cw, cond, cam = self.cw, self.cond, self.camera
        H, W = self.H, self.W
        flat_ids = ras.ids.reshape(-1)
        out = np.empty(H * W, np.float32)
        sky = np.flatnonzero(flat_ids < 0)
        if sky.size:  # brighter towards the horizon
            r_, c_ = np.divmod(sky, W)
            dirz = ((float(R[2, 0]) * self.xs[c_] + float(R[2, 1]) * self.ys[r_] + float(R[2, 2]))
                    / self.ray_norm.reshape(-1)[sky])
            el = np.sqrt(np.clip(dirz, 0.0, 1.0))
            out[sky] = cond.sky_horizon + (cond.sky_zenith - cond.sky_horizon) * el
        idx = np.flatnonzero(flat_ids >= 0)
        if idx.size:
            q = flat_ids[idx]
            a = ras.a.reshape(-1)[idx]
            b = ras.b.reshape(-1)[idx]
            z = ras.depth.reshape(-1)[idx]
            rows, cols = np.divmod(idx, W)
            dx, dy = self.xs[cols], self.ys[rows]  # ray (dx, dy, 1) in the camera frame
            dn = self.ray_norm.reshape(-1)[idx]
            Nq = (cw["N"] @ R).astype(np.float32)[q]
            nx, ny, nz = Nq[:, 0], Nq[:, 1], Nq[:, 2]
            cos_view = np.abs(nx * dx + ny * dy + nz) / dn
            foot = z / np.float32(cam.fx) / np.sqrt(np.maximum(cos_view, 0.02))  # m per pixel
            lod = np.log2(np.maximum(foot * cw["tpm"][q], 1e-6))
            reps, off = cw["reps"][q], cw["offset"][q]
            s = a * reps[:, 0] + off[:, 0]
            t = b * reps[:, 1] + off[:, 1]
            alb = self._linear_atlas().sample(cw["mat"][q], s, t, lod) * cw["albedo"][q]
            gmask = cw["ground"][q]
            E = self._lightmap(q, a, b, gmask)
            g = np.flatnonzero(gmask)
            if g.size and self.world.road is not None:
                zg = z[g]
                Rf = R.astype(np.float32)
                xw = float(C[0]) + zg * (Rf[0, 0] * dx[g] + Rf[0, 1] * dy[g] + Rf[0, 2])
                yw = float(C[1]) + zg * (Rf[1, 0] * dx[g] + Rf[1, 1] * dy[g] + Rf[1, 2])
                alb[g] = self._ground_albedo(xw, yw, foot[g], lod[g], alb[g],
                                             float(cw["tpm"][q[g[0]]]))
            if cond.headlight > 0:
                P = np.stack([z * dx, z * dy, z], 1)
                E = E + headlight_irradiance(P, Nq, cond)
            L = alb * E
            fog = np.exp(-(z * dn) * np.float32(1.0 / cond.fog_distance))
            out[idx] = L * fog + np.float32(cond.sky_horizon) * (1.0 - fog)
        return out.reshape(H, W) * self.vignette

    def _linear_atlas(self):
        """The texture atlas with gray levels linearised (textures are display-referred)."""
        if self._gamma_atlas is None:
            key = ("_linear_atlas", self.cond.gamma)
            cache = self.world._lightmaps
            if key not in cache:
                from copy import copy

                lin = copy(self.atlas)
                lin.image = np.power(self.atlas.image, self.cond.gamma).astype(np.float32)
                cache[key] = lin
            self._gamma_atlas = cache[key]
        return self._gamma_atlas

    def _lightmap(self, q: np.ndarray, a: np.ndarray, b: np.ndarray,
                  gmask: np.ndarray | None = None) -> np.ndarray:
        """Baked irradiance at quad coordinates (a, b) of quads q."""
        lm, cw = self.lightmaps, self.cw
        if self._lm_coords is None:
            r = lm.rect.astype(np.float32)
            self._lm_coords = (r[:, 0] + 1, r[:, 2] - 1, r[:, 1] + 1, r[:, 3] - 1)
        x0, sx, y0, sy = self._lm_coords
        if gmask is None:
            gmask = cw["ground"][q]
        E = np.empty(q.shape, np.float32)
        for sel, img in ((np.flatnonzero(gmask), lm.ground), (np.flatnonzero(~gmask), lm.atlas)):
            if sel.size:
                qs = q[sel]
                E[sel] = remap_points(img, x0[qs] + a[sel] * sx[qs], y0[qs] + b[sel] * sy[qs])
        return E

    def _ground_albedo(self, x, y, foot, lod, grass, tpm_ground):
        """Grass, sidewalk paving and asphalt with lane markings, from the road distance field."""
        road = self.world.road
        ext = self.world.extent
        f = road.fields(-ext, ext, 0.5)  # distance is smooth: 0.5 m grids keep it to ~1 mm
        res, lo = f["res"], f["lo"]
        fd = remap_points(f["image"], ((x - lo) / res).astype(np.float32),
                          ((y - lo) / res).astype(np.float32))
        ad, ph_s = np.abs(fd[:, 0]), fd[:, 2]
        atlas = self._linear_atlas()
        size = atlas.size
        out = grass
        hw, walk = road.half_width, road.sidewalk
        fp = np.maximum(foot, 0.01)
        near = ad < hw + walk + 1.0
        if not near.any():
            return out
        i = np.flatnonzero(near)
        xi, yi, fpi, adi = x[i], y[i], fp[i], ad[i]
        texs = {}
        for name in ("asphalt", "paving"):
            m = TEXTURE_METRES[name][0]
            lod_m = lod[i] + np.log2(size / m / tpm_ground)
            mat = np.full(i.shape, atlas.index(name), np.int32)
            texs[name] = atlas.sample(mat, xi / m, yi / m, lod_m)
        w_road = _smoothstep(hw + fpi, hw - fpi, adi)
        w_walk = _smoothstep(hw + walk + fpi, hw + walk - fpi, adi) - w_road
        alb = out[i] * (1 - w_road - w_walk) + texs["asphalt"] * w_road + texs["paving"] * w_walk
        kerb = np.clip(1.0 - np.abs(adi - hw) / np.maximum(0.12, fpi), 0.0, 1.0)
        alb = alb * (1.0 - 0.5 * kerb)
        lw = 0.06  # half width of painted lines

        def cover(dist):
            return np.clip((lw - dist) / fpi + 0.5, 0.0, 1.0)

        # dashes where sin(phase) > 0; near a dash end sin(phase) ~ 2 pi (metres) / period
        period = road.dash_period
        dash = np.clip(ph_s[i] * period / (2 * np.pi) / fpi + 0.5, 0.0, 1.0)
        paint = np.maximum(cover(adi) * dash, cover(np.abs(adi - road.edge_line)))
        alb = alb * (1 - paint) + 0.6 * paint * (0.8 + 0.4 * texs["asphalt"])
        out = out.copy()
        out[i] = alb
        return out

    # ----- the camera -----
    def clean_pair(self, T_world_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free left and right images before exposure: ``radiance ** (1 / gamma)``."""
        out = []
        for side in ("left", "right"):
            R, C = self._pose(T_world_camera, side)
            L = self.radiance(R, C)
            out.append(np.power(np.maximum(L, 0.0), 1.0 / self.cond.gamma).astype(np.float32))
        return out[0], out[1]

    def render(self, T_world_camera: np.ndarray, *, gain: float | None = None,
               rng: np.random.Generator | None = None, noise: bool = True
               ) -> tuple[np.ndarray, np.ndarray, float]:
        """Left, right (float32 in [0, 1], 8-bit levels) and the gain used.

        gain: exposure gain; None solves auto exposure on the left image for
        ``condition.target_mean``. rng: noise source (required when noise=True).
        """
        Xl, Xr = self.clean_pair(T_world_camera)
        if gain is None:
            gain = solve_gain(Xl[::2, ::2], self.cond.target_mean, self.cond.gain_limits)
        if noise and rng is None:
            raise ValueError("rng is required for noisy rendering")
        left, right = self.expose(Xl, Xr, gain, rng if noise else None)
        return left, right, float(gain)

    def expose(self, Xl: np.ndarray, Xr: np.ndarray, gain: float,
               rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """Sensor: ``clip(gain * X)`` + noise (if rng) quantised to 8 bit, as float32 /255.

        Both cameras of the rig share the gain (one exposure setting) but not the noise.
        """
        imgs = []
        for X in (Xl, Xr):
            clean = np.clip(np.float32(gain) * X, 0.0, 1.0)
            if rng is not None:
                std = sensor_noise_std(clean, self.cond).astype(np.float32)
                clean = clean + std * rng.standard_normal(clean.shape, dtype=np.float32)
            q = np.rint(np.clip(clean, 0.0, 1.0) * 255.0).astype(np.uint8)
            imgs.append(q.astype(np.float32) / np.float32(255.0))
        return imgs[0], imgs[1]
