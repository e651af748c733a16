"""Synthetic stereo worlds: pinhole/stereo geometry, lighting, seeding, teach and repeat drives."""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from sdpr_loc.data.bags import StereoBag, write_stereo_bag
from sdpr_loc.data.lighting import CONDITIONS, Condition, headlight_irradiance
from sdpr_loc.data.synth import (World, camera_pose, default_camera, drive_poses, make_world,
                                 render_drive)
from sdpr_loc.data.render import StereoRenderer

CAM = default_camera()  # 240x320, fx 200, baseline 0.24
# uniform light, no sky, linear response: the radiance is the texture itself (up to a factor)
FLAT = Condition("flat", sun=0.0, sky=1.0, sky_horizon=0.0, sky_zenith=0.0, fog_distance=1e9,
                 vignetting=0.0, gamma=1.0, read_noise=0.004, shot_noise=0.0,
                 exposure_jitter=0.0)


@pytest.fixture(scope="module")
def town():
    return make_world(5)


def blob_texture(n=128, sigma=0.1):
    yy, xx = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2
    return np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * (sigma * n) ** 2)).astype(np.float32)


def centroid(img, u, v, h=10):
    r0, c0 = int(round(v)), int(round(u))
    win = img[r0 - h:r0 + h + 1, c0 - h:c0 + h + 1].astype(np.float64)
    win = np.clip(win - np.median(img), 0, None)
    ys, xs = np.mgrid[r0 - h:r0 + h + 1, c0 - h:c0 + h + 1]
    return (win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()


def project(p_cam, cam, side):
    """Pinhole projection written out here, independent of the renderer."""
    x = p_cam[0] - (cam.baseline if side == "right" else 0.0)
    return cam.fx * x / p_cam[2] + cam.cx, cam.fy * p_cam[1] / p_cam[2] + cam.cy


def test_known_points_project_where_the_model_says(tmp_path):
    """Blob-textured squares at known 3D points: rendered centroids match the pinhole
    projection in the left and right images (<= 0.5 px) after the whole sensor chain."""
    world = World(0, materials=[("blob", blob_texture(), False),
                                ("dark", np.full((8, 8), 0.05, np.float32), True)], texture_size=128)
    # high above the ground, where surfaces are lit uniformly (no darkening near the ground)
    T = camera_pose(np.array([3.0, -2.0]), np.array(0.7), 0.05, -0.03, height=20.0)
    R, C = T[:3, :3], T[:3, 3]
    points = np.array([[0.3, -0.2, 4.0], [-1.5, 0.4, 7.0], [2.0, 0.8, 12.0], [-0.2, -0.6, 2.5],
                       [-3.0, -1.5, 20.0]])
    for p in points:  # squares facing the camera, built bottom-up in the camera frame
        size = 0.12 * p[2]  # the blob spans about the same number of pixels at every depth
        o = p + np.array([-size / 2, size / 2, 0.0])
        world.add_quad(R @ o + C, R @ [size, 0, 0], R @ [0, -size, 0], "blob")
    world.add_quad([-50, -50, -5.0], [100, 0, 0], [0, 100, 0], "dark")  # a floor in view
    r = StereoRenderer(world, CAM, FLAT)
    left, right, _ = r.render(T, gain=1.5, rng=np.random.default_rng(0))
    for side, img in (("left", left), ("right", right)):
        for p in points:
            u, v = project(p, CAM, side)
            cu, cv = centroid(img, u, v)
            assert abs(cu - u) <= 0.5 and abs(cv - v) <= 0.5, (side, p, cu - u, cv - v)
    # noise-free radiance: far below the bound
    for side in ("left", "right"):
        img = r.radiance(*r._pose(T, side))
        for p in points:
            u, v = project(p, CAM, side)
            cu, cv = centroid(img, u, v)
            assert abs(cu - u) < 0.05 and abs(cv - v) < 0.05


def _checker_world(depth, R, C):
    rng = np.random.default_rng(3)
    tex = cv2.GaussianBlur(rng.uniform(0, 1, (256, 256)).astype(np.float32), (0, 0), 1.5)
    world = World(0, materials=[("speckle", tex, True)], texture_size=256)
    size = 40.0
    o = np.array([-size / 2, size / 2, depth])
    world.add_quad(R @ o + C, R @ [size, 0, 0], R @ [0, -size, 0], "speckle",
                   metres=(2.0, 2.0))
    return world


@pytest.mark.parametrize("depth", [3.0, 9.6])
def test_disparity_of_a_fronto_parallel_plane(depth):
    """Phase correlation between left and right equals fx * B / depth."""
    T = camera_pose(np.array([0.0, 0.0]), np.array(0.3))
    world = _checker_world(depth, T[:3, :3], T[:3, 3])
    r = StereoRenderer(world, CAM, FLAT)
    left, right = r.clean_pair(T)
    win = cv2.createHanningWindow(left.shape[::-1], cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(right.astype(np.float64), left.astype(np.float64), win)
    assert dx == pytest.approx(CAM.fx * CAM.baseline / depth, abs=0.05)
    assert dy == pytest.approx(0.0, abs=0.05)
    np.testing.assert_allclose(r.depth(T)[np.isfinite(r.depth(T))], depth, rtol=1e-5)


def test_ground_depth_and_disparity_match_analytic_plane(town):
    """On the road, depth equals the analytic ray/ground intersection, and the right image
    warped by fx*B/depth fits the left one best (within 0.1 px of the analytic disparity)."""
    T = drive_poses(town, "teach", 1)[0]
    r = StereoRenderer(town, CAM, "day")
    ras = r.raster(*r._pose(T, "left"))
    R, C = T[:3, :3], T[:3, 3]
    rows, cols = np.mgrid[0:CAM.height, 0:CAM.width]
    d_cam = np.stack([(cols - CAM.cx) / CAM.fx, (rows - CAM.cy) / CAM.fy, np.ones_like(cols, float)], -1)
    d_world = d_cam @ R.T
    z_ground = -C[2] / d_world[..., 2]  # depth (camera z) where the ray meets z = 0
    ground = ras.ids == np.flatnonzero(town.compiled()["ground"])[0]
    ground &= rows > CAM.height * 0.7
    assert ground.sum() > 5000
    np.testing.assert_allclose(ras.depth[ground], z_ground[ground], rtol=1e-4)
    left, right = r.clean_pair(T)
    disp = (CAM.fx * CAM.baseline / z_ground).astype(np.float32)
    deltas = np.round(np.arange(-1.0, 1.01, 0.1), 2)
    err = []
    for delta in deltas:  # residual of the warp when the disparity is off by delta pixels
        mx = (cols - disp - delta).astype(np.float32)
        warped = cv2.remap(right, mx, rows.astype(np.float32), cv2.INTER_LINEAR)
        m = ground & (mx > 2)
        err.append(float(np.abs(warped - left)[m].mean()))
    assert abs(deltas[int(np.argmin(err))]) <= 0.1, dict(zip(deltas, err))


def test_night_mean_intensity_and_noise(town):
    cond = CONDITIONS["night"]
    frames = list(render_drive(town, "repeat", "night", 6, seed=1))
    means = np.array([f.left.mean() for f in frames])
    assert abs(means.mean() - cond.target_mean) < 0.02
    assert np.all(np.abs(means - cond.target_mean) < 0.05)
    # noise: residual against the noise-free image follows the configured model
    r = StereoRenderer(town, CAM, cond)
    T = frames[2].pose
    Xl, Xr = r.clean_pair(T)
    clean, _ = r.expose(Xl, Xr, 1.0 * r_gain(r, Xl), None)
    noisy, _ = r.expose(Xl, Xr, r_gain(r, Xl), np.random.default_rng(7))
    std_model = np.sqrt(cond.read_noise ** 2 + cond.shot_noise * clean)
    ok = (clean > 0.12) & (clean < 0.85)
    z = (noisy - clean)[ok] / std_model[ok]
    assert ok.sum() > 2000
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, abs=0.06)
    day = next(iter(render_drive(town, "teach", "day", 1)))
    assert noisy.mean() < day.left.mean() - 0.2  # night is much darker than day


def r_gain(r, X):
    from sdpr_loc.data.lighting import solve_gain
    return solve_gain(X[::2, ::2], r.cond.target_mean, r.cond.gain_limits)


def test_conditions_hit_their_exposure_targets(town):
    for name in ("day", "dusk"):
        means = [f.left.mean() for f in render_drive(town, "teach", name, 3)]
        assert abs(np.mean(means) - CONDITIONS[name].target_mean) < 0.03, name


def test_same_seed_same_bytes_other_seed_other_noise(town, tmp_path):
    a = [f.left.tobytes() + f.right.tobytes() for f in render_drive(town, "repeat", "night", 2, seed=3)]
    b = [f.left.tobytes() + f.right.tobytes() for f in render_drive(town, "repeat", "night", 2, seed=3)]
    c = [f.left.tobytes() for f in render_drive(town, "repeat", "night", 2, seed=4)]
    assert a == b and a[0][:len(c[0])] != c[0]
    # and whole bags: byte-identical files from separate worlds with the same seed
    digests = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        path = tmp_path / str(k) / "drive.mcap"
        write_stereo_bag(path, render_drive(make_world(5), "teach", "dusk", 2))
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_cast_shadow_and_attached_shadow():
    """Sun from +x at 45 deg: a 2x2x4 m box shadows the ground over x in [-5, -1]."""
    world = World(0, materials=[("white", np.full((8, 8), 0.8, np.float32), True)],
                  texture_size=8)
    world.add_quad([-20, -20, 0], [40, 0, 0], [0, 40, 0], "white", ground=True)
    world.add_box([0, 0, 0], [2, 2, 4], 0.0, material="white")
    sun = Condition("sun", sun=1.0, sun_elevation_deg=45.0, sun_azimuth_deg=0.0, sky=0.2,
                    sky_horizon=0.0, sky_zenith=0.0, fog_distance=1e9, vignetting=0.0)
    r = StereoRenderer(world, CAM, sun)
    lm = r.lightmaps
    cw = world.compiled()
    g = int(np.flatnonzero(cw["ground"])[0])

    def ground_E(x, y):
        a = (np.array([x, y, 0.0]) - cw["O"][g]) @ cw["Ud"][g]
        b = (np.array([x, y, 0.0]) - cw["O"][g]) @ cw["Vd"][g]
        return float(r._lightmap(np.array([g]), np.array([a], np.float32),
                                 np.array([b], np.float32))[0])

    lit = np.sin(np.radians(45))  # sun term on flat ground
    assert ground_E(-3.0, 0.0) < 0.25  # in the shadow: sky only (darkened near the box)
    assert ground_E(-6.0, 0.0) > lit  # beyond the shadow's end (4 m long)
    assert ground_E(3.0, 0.0) > lit  # sun side
    assert ground_E(-3.0, 2.0) > lit  # beside the shadow
    # faces: the one turned to the sun is lit, the one turned away gets only sky
    faces = [q for q in range(len(cw["O"])) if not cw["ground"][q] and abs(cw["N"][q][2]) < 0.5]
    by_normal = {tuple(np.round(cw["N"][q])): q for q in faces}
    E = lambda q: float(r._lightmap(np.array([q]), np.array([0.5], np.float32),
                                    np.array([0.5], np.float32))[0])
    assert E(by_normal[(1.0, 0.0, 0.0)]) > lit and E(by_normal[(-1.0, 0.0, 0.0)]) < 0.2
    assert lm.atlas.dtype == np.float32


def test_headlight_falls_off_with_distance_squared_and_cone():
    cond = CONDITIONS["night"]
    from sdpr_loc.data.lighting import HEADLIGHT_PITCH_DEG, HEADLIGHT_POSITION

    pitch = np.radians(HEADLIGHT_PITCH_DEG)
    axis = np.array([0.0, np.sin(pitch), np.cos(pitch)])
    P = HEADLIGHT_POSITION + np.outer([5.0, 10.0, 20.0], axis)
    N = np.tile(-axis, (3, 1))  # surfaces facing the lamp
    E = headlight_irradiance(P.astype(np.float32), N.astype(np.float32), cond)
    np.testing.assert_allclose(E[0] / E[1], 4.0, rtol=1e-4)
    np.testing.assert_allclose(E[0] / E[2], 16.0, rtol=1e-4)
    np.testing.assert_allclose(E[1], cond.headlight / 100.0, rtol=1e-4)
    side = HEADLIGHT_POSITION + 10.0 * np.array([np.sin(np.radians(40)), 0, np.cos(np.radians(40))])
    assert headlight_irradiance(side[None].astype(np.float32), N[:1].astype(np.float32), cond)[0] == 0


def test_teach_and_repeat_share_the_route_with_small_offsets(town):
    teach = drive_poses(town, "teach", 300)
    reps = [drive_poses(town, "repeat", 300, seed=s) for s in (0, 1)]
    for T in [teach, *reps]:
        R = T[:, :3, :3]
        np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape),
                                   atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
        assert np.all(np.abs(T[:, 2, 3] - 1.5) < 0.05)  # camera height above the road
    steps = np.linalg.norm(np.diff(teach[:, :3, 3], axis=0), axis=1)
    np.testing.assert_allclose(steps, 0.5, rtol=0.02)  # 5 m/s at 10 Hz
    assert not np.allclose(reps[0], reps[1])
    for rep in reps:
        d = np.linalg.norm(rep[:, None, :3, 3] - teach[None, :, :3, 3], axis=2)
        j = d.argmin(1)
        ok = (j > 0) & (j < len(teach) - 1)  # inside the taught stretch
        assert d.min(1)[ok].max() < 0.75  # lateral offset bounded
        assert d.min(1)[ok].mean() > 0.05  # but not the same path
        cosang = np.einsum("nij,nij->n", teach[j, :3, :3], rep[:, :3, :3])
        ang = np.degrees(np.arccos(np.clip((cosang - 1) / 2, -1, 1)))
        assert ang[ok].max() < 6.0 and ang[ok].mean() > 0.3
    # optical axis looks along the direction of travel, slightly down
    fwd = teach[:-1, :3, 2]
    mv = np.diff(teach[:, :3, 3], axis=0)
    mv /= np.linalg.norm(mv, axis=1, keepdims=True)
    assert np.all(np.einsum("ni,ni->n", fwd, mv) > np.cos(np.radians(6)))
    assert np.all(fwd[:, 2] < 0)


def test_larger_camera_and_bad_arguments(town):
    cam = default_camera(384, 512)
    assert cam.fx == 320.0 and (cam.width, cam.height) == (512, 384)
    f = next(iter(render_drive(town, "teach", "dusk", 1, camera=cam)))
    assert f.left.shape == (384, 512) and f.right.shape == (384, 512)
    assert f.left.dtype == np.float32 and 0.0 <= f.left.min() and f.left.max() <= 1.0
    with pytest.raises(ValueError, match="route"):
        drive_poses(town, "loop", 3)
    with pytest.raises(ValueError, match="condition"):
        next(iter(render_drive(town, "teach", "noon", 1)))
    with pytest.raises(ValueError, match="material"):
        town.add_quad([0, 0, 0], [1, 0, 0], [0, 1, 0], "marble")
    with pytest.raises(ValueError, match="world seed must be an int >= 0, got -1"):
        make_world(-1)
    with pytest.raises(ValueError, match="drive seed must be an int >= 0, got 2.5"):
        drive_poses(town, "repeat", 3, seed=2.5)


def test_make_bag_cli(tmp_path, capsys):
    from sdpr_loc.cli import main

    out = tmp_path / "drive.mcap"
    assert main(["make-bag", "--world", "5", "--condition", "night", "--frames", "3",
                 "--route", "repeat", "--seed", "2", "--out", str(out), "--no-progress"]) == 0
    assert "wrote 3 stereo frames" in capsys.readouterr().out
    bag = StereoBag(out)
    frames = list(bag)
    assert len(frames) == 3
    expected = drive_poses(make_world(5), "repeat", 3, seed=2)
    np.testing.assert_allclose(np.stack([f.pose for f in frames]), expected, atol=1e-12)
    assert main(["make-bag", "--out", str(out), "--frames", "1", "--no-progress"]) == 2
    assert "exists" in capsys.readouterr().err
