"""Synthetic stereo drives: teach by day, repeat under another light, with ground truth.

The entry points::

    world = make_world(seed)                       # textured town around a closed road
    frames = render_drive(world, route="repeat", condition="night", frames=300)
    write_stereo_bag("drive.mcap", frames)         # sdpr_loc.data.bags

A teach drive follows the right lane of the loop at constant speed; a repeat drive (``seed``
picks which one) follows the same route with smooth lateral offsets (up to ~0.6 m), heading
offsets (a few degrees) and speed changes, so live frames never coincide with keyframes. Every
frame carries ``T_world_camera`` of the left optical frame in the world's frame, shared by all
drives of a world. Everything is seeded: the same arguments give identical bytes.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from sdpr_loc.geometry.stereo import StereoCamera

from .bags import StereoFrame
from .lighting import CONDITIONS, Condition, get_condition, solve_gain
from .render import StereoRenderer
from .synth_world import Box, LoopRoad, Quad, World, check_seed, make_world

__all__ = ["World", "make_world", "render_drive", "drive_poses", "default_camera",
           "StereoRenderer", "CONDITIONS", "Condition", "get_condition", "Quad", "Box",
           "LoopRoad", "camera_pose", "ROUTES", "CAMERA_HEIGHT", "CAMERA_PITCH_DEG"]

ROUTES = ("teach", "repeat")
CAMERA_HEIGHT = 1.5      # metres above the road
CAMERA_PITCH_DEG = 4.0   # optical axis tilted down
TEACH_EPOCH_NS = 1_700_000_000 * 10**9
_DAY_NS = 86_400 * 10**9


def default_camera(height: int = 240, width: int = 320, fx: float | None = None,
                   baseline: float = 0.24) -> StereoCamera:
    """Rectified pair with fx = 200 at 320 px width (about 77 deg horizontal field of view),
    scaled with the width; principal point at the image centre."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    f = 200.0 * width / 320.0 if fx is None else float(fx)
    return StereoCamera(fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0,
                        baseline=baseline, width=width, height=height)


def _rot(axis: str, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(c), np.zeros_like(c)
    if axis == "x":
        m = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "y":
        m = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        m = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.moveaxis(np.array(m, dtype=np.float64), (0, 1), (-2, -1))


def camera_pose(xy: np.ndarray, yaw: np.ndarray, pitch: np.ndarray | float = 0.0,
                roll: np.ndarray | float = 0.0, height: float = CAMERA_HEIGHT,
                camera_pitch_deg: float = CAMERA_PITCH_DEG) -> np.ndarray:
    """T_world_camera (..., 4, 4) of a camera on a vehicle at ``xy`` heading ``yaw``.

    Vehicle frame: x forward, y left, z up, rotated by yaw, then pitch and roll (vibration).
    The optical frame looks forward (z), x to the right, y down, tilted down by
    ``camera_pitch_deg``.
    """
    xy = np.asarray(xy, dtype=np.float64)
    yaw = np.asarray(yaw, dtype=np.float64)
    pitch = np.broadcast_to(np.asarray(pitch, dtype=np.float64), yaw.shape)
    roll = np.broadcast_to(np.asarray(roll, dtype=np.float64), yaw.shape)
    R_wb = _rot("z", yaw) @ _rot("y", pitch) @ _rot("x", roll)
    th = np.radians(camera_pitch_deg)
    R_bc = np.array([[0.0, -np.sin(th), np.cos(th)],
                     [-1.0, 0.0, 0.0],
                     [0.0, -np.cos(th), -np.sin(th)]])
    T = np.zeros(yaw.shape + (4, 4))
    T[..., :3, :3] = R_wb @ R_bc
    T[..., :2, 3] = xy
    T[..., :3, 3] += R_wb @ np.array([0.0, 0.0, height])
    T[..., 3, 3] = 1.0
    return T


def _sinusoids(rng: np.random.Generator, amp: float, wavelength: float, terms: int = 3):
    """A smooth random profile f(x) (sum of sinusoids, random phases, wavelengths around
    ``wavelength``) with |f| <= amp, and its derivative f'(x)."""
    weights = rng.uniform(0.5, 1.0, terms)
    weights = amp * weights / weights.sum()
    k = 2 * np.pi / (wavelength * rng.uniform(0.6, 1.6, terms))
    phase = rng.uniform(0, 2 * np.pi, terms)

    def f(x):
        x = np.asarray(x, dtype=np.float64)[..., None]
        return (weights * np.sin(k * x + phase)).sum(-1)

    def df(x):
        x = np.asarray(x, dtype=np.float64)[..., None]
        return (weights * k * np.cos(k * x + phase)).sum(-1)

    return f, df


def drive_poses(world: World, route: str = "teach", frames: int = 300, seed: int = 0,
                fps: float = 10.0, speed: float = 5.0) -> np.ndarray:
    """(frames, 4, 4) ground-truth T_world_camera of a teach or repeat drive.

    teach: right lane (lateral -lane_offset), constant speed, light body vibration.
    repeat: same lane with smooth lateral offsets up to ~0.6 m, heading offsets up to ~4 deg
    (path direction plus steering wobble), speed varying +-10 %, start shifted up to 1.5 m.
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    check_seed(seed, "drive seed")
    if not fps > 0 or not speed > 0:
        raise ValueError("fps and speed must be positive")
    road = world.road
    if road is None:
        raise ValueError("the world has no road to drive (build it with make_world)")
    i = np.arange(frames, dtype=np.float64)
    step = speed / fps
    lane = -road.lane_offset
    rng = np.random.default_rng([world.seed, 11, ROUTES.index(route), int(seed)])
    if route == "teach":
        dist = step * i  # distance driven along the vehicle's own path

        def lat_f(x):
            return np.full(np.shape(x), lane)

        def wobble_f(x):
            return np.zeros(np.shape(x))
    else:
        s0 = rng.uniform(-1.5, 1.5)
        speed_f, _ = _sinusoids(rng, 0.1, 60.0)
        dist = s0 + step * np.concatenate([[0.0], np.cumsum(1.0 + speed_f(i[:-1]))])[:frames]
        off_f, _ = _sinusoids(rng, 0.6, 45.0)
        wobble_f, _ = _sinusoids(rng, np.radians(1.5), 30.0)

        def lat_f(x):
            return lane + off_f(x)
    # the path (lane plus offsets) sampled finely along the centreline parameter; map driven
    # distance to the parameter so the speed is the vehicle's, not the centreline's
    lo = (dist.min() if frames else 0.0) - 10.0
    hi = (dist.max() if frames else 0.0) * 1.15 + 10.0
    grid = np.arange(lo, hi, 0.05)
    P, _ = road.frame(grid, lat_f(grid))
    seg = np.linalg.norm(np.diff(P, axis=0), axis=1)
    ell = np.concatenate([[0.0], np.cumsum(seg)])
    ell -= np.interp(0.0, grid, ell)
    s = np.interp(dist, ell, grid)
    xy, _ = road.frame(s, lat_f(s))
    tang = np.gradient(P, axis=0)
    path_yaw = np.unwrap(np.arctan2(tang[:, 1], tang[:, 0]))
    yaw = np.interp(s, grid, path_yaw) + wobble_f(s)
    vib = np.random.default_rng([world.seed, 14, ROUTES.index(route), int(seed)])
    pitch = _sinusoids(vib, np.radians(0.4), 7.0)[0](i)
    roll = _sinusoids(vib, np.radians(0.3), 9.0)[0](i)
    return camera_pose(xy, yaw, pitch, roll)


def render_drive(world: World, route: str = "teach", condition: str | Condition = "day",
                 frames: int = 300, camera: StereoCamera | None = None, seed: int = 0, *,
                 fps: float = 10.0, speed: float = 5.0, start_ns: int | None = None,
                 noise: bool = True) -> Iterator[StereoFrame]:
    """Render a drive frame by frame (a generator: frames stream straight into a bag).

    Auto exposure follows the scene with lag and jitter (exposure changes); noise and jitter
    come from generators seeded by (world seed, route, condition, seed, frame index).
    Stamps: ``start_ns`` (default: a fixed epoch, repeat drives ``seed + 1`` days later) plus
    ``i / fps`` seconds.
    """
    camera = camera or default_camera()
    cond = get_condition(condition)
    poses = drive_poses(world, route, frames, seed, fps, speed)
    if start_ns is None:
        start_ns = TEACH_EPOCH_NS + (0 if route == "teach" else (int(seed) + 1) * _DAY_NS)
    renderer = StereoRenderer(world, camera, cond)
    cond_code = sum(ord(c) for c in cond.name)
    log_gain = None
    lo, hi = np.log(cond.gain_limits[0]), np.log(cond.gain_limits[1])
    for i, T in enumerate(poses):
        rng = np.random.default_rng([world.seed, ROUTES.index(route), cond_code, int(seed), i])
        Xl, Xr = renderer.clean_pair(T)
        target = np.log(solve_gain(Xl[::2, ::2], cond.target_mean, cond.gain_limits))
        log_gain = target if log_gain is None else log_gain + cond.ae_rate * (target - log_gain)
        jitter = cond.exposure_jitter * rng.standard_normal()
        gain = float(np.exp(np.clip(log_gain + jitter, lo, hi)))
        left, right = renderer.expose(Xl, Xr, gain, rng if noise else None)
        yield StereoFrame(left=left, right=right, camera=camera,
                          stamp_ns=int(start_ns + round(i * 1e9 / fps)), pose=T)
