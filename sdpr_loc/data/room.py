"""A textured room rendered for a rectified stereo pair: a small world with exact ground truth.

Tests (tracker, maps, odometry, the nodes) need a stereo stream whose poses are known exactly and
which renders in a few milliseconds on one core; the full town renderer (``sdpr_loc.data.synth``)
is for training and the demo. The room is an axis-aligned box whose six faces carry a "dead
leaves" texture (overlapping grey rectangles: corners at every scale, which is what FAST/ORB and a
keypoint network need). Rendering casts one ray per pixel to the box wall it leaves through and
samples a texture pyramid level matched to the pixel footprint (no aliasing, so left and right
agree). The camera is the caller's (default: :func:`sdpr_loc.data.synth.default_camera`).

World frame: x right, y down, z forward at the start pose (the first camera's optical frame).
Poses are ``T_world_camera`` of the left optical frame, as in :class:`sdpr_loc.data.bags.StereoFrame`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from sdpr_loc.geometry.stereo import StereoCamera

from .bags import StereoFrame
from .synth import default_camera

__all__ = ["StereoRoom", "room_drive_poses"]

TEXEL_M = 0.04           # texture resolution on the walls (metres per texel)
TEXTURE_SIZE = 1024      # texels; the pattern repeats every TEXTURE_SIZE * TEXEL_M metres
LEVELS = 6               # pyramid levels sampled by footprint


def _dead_leaves(rng: np.random.Generator, size: int, count: int = 5000) -> np.ndarray:
    img = np.full((size, size), 0.5, dtype=np.float32)
    for _ in range(count):
        w, h = (np.exp(rng.uniform(np.log(3), np.log(60), 2))).astype(int)
        x, y = rng.integers(0, size, 2)
        xs, ys = np.arange(x, x + w) % size, np.arange(y, y + h) % size
        img[np.ix_(ys, xs)] = rng.uniform(0.1, 0.9)
    return img


def room_drive_poses(n: int, step_m: float = 0.2, yaw_amp_deg: float = 8.0, start_z: float = -2.0,
                lateral: float = 0.0, phase: float = 0.0) -> np.ndarray:
    """(n, 4, 4) T_world_camera: forward along +z, swaying and yawing gently, ``step_m`` a frame.

    ``lateral`` (m) shifts the path sideways and ``phase`` (rad) shifts the sway: a repeat drive
    that does not retrace the teach drive exactly.
    """
    k = np.arange(n, dtype=np.float64)
    yaw = np.deg2rad(yaw_amp_deg) * np.sin(2 * np.pi * k / 60.0 + phase)
    T = np.tile(np.eye(4), (n, 1, 1))
    c, s = np.cos(yaw), np.sin(yaw)
    T[:, 0, 0], T[:, 0, 2], T[:, 2, 0], T[:, 2, 2] = c, s, -s, c   # rotation about y (down)
    T[:, 0, 3] = 0.8 * np.sin(2 * np.pi * k / 90.0 + phase) + lateral
    T[:, 1, 3] = 0.1 * np.sin(2 * np.pi * k / 25.0)
    T[:, 2, 3] = start_z + step_m * k
    return T


@dataclass
class StereoRoom:
    """Box room ``lo <= p <= hi`` (world metres) with textured walls; deterministic per seed."""

    lo: tuple[float, float, float] = (-4.0, -2.5, -6.0)
    hi: tuple[float, float, float] = (4.0, 1.5, 120.0)
    seed: int = 0

    def __post_init__(self) -> None:
        import cv2

        rng = np.random.default_rng(self.seed)
        base = _dead_leaves(rng, TEXTURE_SIZE)
        pad = 64  # blur with wrap-around, so the texture stays seamless
        big = np.pad(base, pad, mode="wrap")
        self._pyramid = [base] + [
            cv2.GaussianBlur(big, (0, 0), 0.6 * 2 ** lvl)[pad:-pad, pad:-pad] for lvl in range(1, LEVELS)]
        self._lo, self._hi = np.asarray(self.lo, float), np.asarray(self.hi, float)

    def _cast(self, T_world_camera: np.ndarray, camera: StereoCamera):
        """Per pixel: ray directions d (world, camera z = 1), depth t, wall axis and hit point p."""
        H, W = int(camera.height), int(camera.width)
        u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
        rays = np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], -1)
        R, o = T_world_camera[:3, :3], T_world_camera[:3, 3]
        d = rays @ R.T                                              # (H, W, 3) world directions
        with np.errstate(divide="ignore", invalid="ignore"):
            wall = np.where(d > 0, self._hi, self._lo)
            t_axis = np.where(np.abs(d) > 1e-12, (wall - o) / d, np.inf)
        axis = np.argmin(t_axis, -1)
        t = np.take_along_axis(t_axis, axis[..., None], -1)[..., 0]   # = depth (ray z is 1)
        return d, t, axis, o + t[..., None] * d

    def depth(self, T_world_camera: np.ndarray, camera: StereoCamera) -> np.ndarray:
        """(H, W) ground-truth depth (z in the camera optical frame, metres)."""
        return self._cast(T_world_camera, camera)[1]

    def render(self, T_world_camera: np.ndarray, camera: StereoCamera,
               gain: float = 1.0, noise: float = 0.0, rng: np.random.Generator | None = None
               ) -> np.ndarray:
        """(H, W) float32 image in [0, 1] of the camera at ``T_world_camera`` (4, 4)."""
        import cv2

        d, t, axis, p = self._cast(T_world_camera, camera)
        a_idx = np.where(axis == 0, 1, 0)                           # the two in-wall coordinates
        b_idx = np.where(axis == 2, 1, 2)
        a = np.take_along_axis(p, a_idx[..., None], -1)[..., 0]
        b = np.take_along_axis(p, b_idx[..., None], -1)[..., 0]
        side = axis * 2 + (np.take_along_axis(d, axis[..., None], -1)[..., 0] > 0)
        mx = (a / TEXEL_M + 173.0 * side) % TEXTURE_SIZE
        my = (b / TEXEL_M + 311.0 * side) % TEXTURE_SIZE
        # footprint of a pixel on the wall, in texels (grazing walls stretch it)
        cos = np.abs(np.take_along_axis(d, axis[..., None], -1)[..., 0]) / np.linalg.norm(d, axis=-1)
        foot = t * np.linalg.norm(d, axis=-1) / camera.fx / np.maximum(cos, 0.05) / TEXEL_M
        level = np.clip(np.log2(np.maximum(foot, 1e-6)), 0, LEVELS - 1)
        mx32, my32 = mx.astype(np.float32), my.astype(np.float32)
        samples = np.stack([cv2.remap(tex, mx32, my32, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
                            for tex in self._pyramid], 0)
        lo = np.floor(level).astype(int)
        hi = np.minimum(lo + 1, LEVELS - 1)
        f = (level - lo).astype(np.float32)
        pick = lambda lvl: np.take_along_axis(samples, lvl[None], 0)[0]  # noqa: E731
        img = (1 - f) * pick(lo) + f * pick(hi)
        shade = 1.0 / (1.0 + 0.01 * t)                              # a little depth shading
        img = gain * img * shade.astype(np.float32)
        if noise > 0:
            img = img + (rng or np.random.default_rng()).normal(0, noise, img.shape).astype(np.float32)
        return np.clip(img, 0.0, 1.0).astype(np.float32)

    def stereo(self, T_world_camera: np.ndarray, camera: StereoCamera, **kw) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) images; the right camera sits ``baseline`` along the left camera's +x."""
        T_r = T_world_camera.copy()
        T_r[:3, 3] = T_world_camera[:3, 3] + T_world_camera[:3, 0] * camera.baseline
        return self.render(T_world_camera, camera, **kw), self.render(T_r, camera, **kw)

    def frames(self, n: int, camera: StereoCamera | None = None, rate_hz: float = 10.0,
               start_ns: int = 1_700_000_000_000_000_000, poses: np.ndarray | None = None,
               **kw) -> Iterator:
        """``n`` :class:`~sdpr_loc.data.bags.StereoFrame` along ``poses`` (default
        :func:`room_drive_poses`), with ground truth; ``kw`` go to :meth:`render` (gain, noise)."""
        camera = camera or default_camera()
        dt = int(round(1e9 / rate_hz))
        for k, T in enumerate(room_drive_poses(n) if poses is None else poses[:n]):
            left, right = self.stereo(T, camera, **kw)
            yield StereoFrame(left=left, right=right, camera=camera, stamp_ns=start_ns + k * dt, pose=T)
