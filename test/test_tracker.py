"""The registration node's logic without ROS: odometry and map localization on rendered stereo,
degenerate frames, and the pose covariance against a finite-difference Hessian."""
import numpy as np
import pytest
import torch

from sdpr_loc.data.maps import build_map
from sdpr_loc.geometry.se3 import so3_exp
from sdpr_loc.data.room import StereoRoom, room_drive_poses
from sdpr_loc.data.synth import default_camera
from sdpr_loc.vision.pipeline import LocalizerConfig
from sdpr_loc.vision.tracker import ERROR, OK, Tracker, TrackerConfig
from sdpr_loc.vision.classical import orb_keypoints
from sdpr_loc.vision.keypoints import StereoKeypoints


@pytest.fixture(scope="module")
def drive():
    room, cam = StereoRoom(seed=2), default_camera(240, 320, fx=160.0)
    frames = list(room.frames(24, cam))
    return room, cam, frames, [orb_keypoints(f.left, f.right, cam) for f in frames]


def _rel(Ta, Tb):
    return np.linalg.inv(Ta) @ Tb


def _angle_deg(R):
    return np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))


def test_odometry_tracks_ground_truth(drive):
    _, _, frames, kps = drive
    tr = Tracker(TrackerConfig(mode="odometry"), initial_pose=frames[0].pose)
    first = tr.process(kps[0], frames[0].stamp_ns)
    assert first.level == OK and first.new_keyframe and first.T is None and not first.certified
    errs, new_kf = [], 0
    for f, kp in zip(frames[1:], kps[1:]):
        r = tr.process(kp, f.stamp_ns)
        assert r.level == OK and r.certified, r.reason
        assert r.inliers >= 50 and r.margin > 0 and abs(r.gap) < 1e-6
        C = r.covariance
        assert np.allclose(C, C.T) and np.linalg.eigvalsh(C).min() > 0
        errs.append(np.linalg.norm(r.T[:3, 3] - f.pose[:3, 3]))
        new_kf += r.new_keyframe
    travelled = np.linalg.norm(frames[-1].pose[:3, 3] - frames[0].pose[:3, 3])
    assert max(errs) < 0.03 * travelled + 0.02
    assert new_kf >= 3                                    # 4.6 m with a keyframe every metre
    assert _angle_deg(_rel(r.T, frames[-1].pose)[:3, :3]) < 1.0


def test_odometry_drift_is_not_a_registration_failure(drive):
    """After a long drive the keyframe's accumulated covariance is large: the published covariance
    says so, but integrity judges the registration itself, so odometry keeps publishing."""
    from sdpr_loc.vision.integrity import FAIL

    _, _, frames, kps = drive
    tr = Tracker(TrackerConfig(mode="odometry"), initial_pose=frames[0].pose)
    tr.process(kps[0], frames[0].stamp_ns)
    tr.keyframe.cov = np.diag([1.0] * 3 + [0.01] * 3)     # ~1 m of drift behind this keyframe
    r = tr.process(kps[1], frames[1].stamp_ns)
    assert r.certified and r.integrity != FAIL, r.integrity_reasons
    assert np.linalg.eigvalsh(r.covariance[:3, :3]).max() > 0.9
    assert r.integrity_stats["position_std"] < 0.05


def test_map_mode_localizes_a_different_drive_at_night(drive):
    room, cam, frames, _ = drive
    kmap = build_map(iter(frames), orb_keypoints, every_m=1.0, frontend="orb")
    tr = Tracker(TrackerConfig(mode="map"), kmap)
    poses = room_drive_poses(16, step_m=0.25, lateral=0.3, phase=0.6)
    rng = np.random.default_rng(0)
    results = []
    for f in room.frames(16, cam, poses=poses, gain=0.55, noise=0.01, rng=rng):
        r = tr.process(orb_keypoints(f.left, f.right, cam), f.stamp_ns)
        results.append(r)
        assert r.certified, r.reason
        assert np.linalg.norm(r.T[:3, 3] - f.pose[:3, 3]) < 0.06
        assert _angle_deg(_rel(r.T, f.pose)[:3, :3]) < 1.0
    assert "relocalized" in results[0].reason                    # no prior: place recognition
    assert len({r.keyframe for r in results}) >= 3               # follows the keyframes along


def _empty(D=256):
    z = torch.zeros
    return StereoKeypoints(uv=z(1, 0, 2), disparity=z(1, 0), points=z(1, 0, 3), inv_cov=z(1, 0, 3, 3),
                           scores=z(1, 0), descriptors=z(1, 0, D), valid=z(1, 0, dtype=torch.bool))


def test_degenerate_frames_are_never_certified(drive):
    _, cam, frames, kps = drive
    tr = Tracker(TrackerConfig(mode="odometry"))
    tr.process(kps[0], 1)
    r = tr.process(_empty(), 2)                                         # black frame
    assert r.level == ERROR and r.T is None and not r.certified and "keypoints" in r.reason
    same = orb_keypoints(frames[3].left, frames[3].left, cam)           # left == right
    r = tr.process(same, 3)
    assert r.level == ERROR and not r.certified
    # keypoints all on one line: rotation about it is free
    K = 40
    s = torch.linspace(0, 1, K)
    pts = torch.stack([s, 0.5 * s, 5 + s], -1)[None]
    desc = torch.eye(K)[None]
    line = StereoKeypoints(uv=torch.zeros(1, K, 2), disparity=torch.ones(1, K), points=pts,
                           inv_cov=torch.eye(3).expand(1, K, 3, 3).clone() * 100, scores=torch.ones(1, K),
                           descriptors=desc, valid=torch.ones(1, K, dtype=torch.bool))
    t2 = Tracker(TrackerConfig(mode="odometry"))
    t2.process(line, 1)
    r = t2.process(line, 2)
    assert not r.certified and r.level != OK and ("collinear" in r.reason or "not unique" in r.reason)


def test_repeated_identical_frame_is_zero_motion(drive):
    _, _, _, kps = drive
    tr = Tracker(TrackerConfig(mode="odometry"))
    tr.process(kps[5], 1)
    r = tr.process(kps[5], 2)
    assert r.certified and np.allclose(r.T, np.eye(4), atol=1e-6)


def test_descriptor_mismatch_with_map(drive):
    _, _, frames, _ = drive
    kmap = build_map(iter(frames[:3]), orb_keypoints, every_m=1.0, frontend="orb")
    tr = Tracker(TrackerConfig(mode="map"), kmap)
    K = 30
    other = StereoKeypoints(uv=torch.zeros(1, K, 2), disparity=torch.ones(1, K), points=torch.rand(1, K, 3) + 2,
                            inv_cov=torch.eye(3).expand(1, K, 3, 3).clone(), scores=torch.ones(1, K),
                            descriptors=torch.nn.functional.normalize(torch.randn(1, K, 64), dim=-1),
                            valid=torch.ones(1, K, dtype=torch.bool))
    r = tr.process(other, 1)
    assert r.level == ERROR and "descriptor length" in r.reason and not r.certified
    with pytest.raises(ValueError, match="map"):
        Tracker(TrackerConfig(mode="map"), None)


def test_covariance_is_the_inverse_half_hessian():
    """cov = k (H/2)^-1 with H the finite-difference Hessian of the cost in (position, rotation)
    and k the integrity calibration's covariance factor."""
    g = torch.Generator().manual_seed(4)
    K = 60
    src = (torch.rand(K, 3, generator=g, dtype=torch.float64) * torch.tensor([8, 4, 10.0]) +
           torch.tensor([-4, -2, 3.0]))
    A = torch.randn(K, 3, 3, generator=g, dtype=torch.float64)
    S_src = A @ A.transpose(1, 2) * 1e-3 + torch.eye(3, dtype=torch.float64) * 1e-4
    B = torch.randn(K, 3, 3, generator=g, dtype=torch.float64)
    S_trg = B @ B.transpose(1, 2) * 1e-3 + torch.eye(3, dtype=torch.float64) * 1e-4
    R = so3_exp(torch.tensor([[0.0, 0.004, 0.002]], dtype=torch.float64))[0]   # < 1 degree
    t = torch.tensor([0.1, -0.05, 0.3], dtype=torch.float64)
    trg = src @ R.T + t + 1e-3 * torch.randn(K, 3, generator=g, dtype=torch.float64)
    desc = torch.eye(K, dtype=torch.float32)[None]

    def kp(P, S):
        return StereoKeypoints(uv=torch.zeros(1, K, 2), disparity=torch.ones(1, K), points=P[None].float(),
                               inv_cov=torch.linalg.inv(S)[None].float(), scores=torch.ones(1, K),
                               descriptors=desc, valid=torch.ones(1, K, dtype=torch.bool))

    tr = Tracker(TrackerConfig(mode="odometry", min_inliers=10), matching=LocalizerConfig(ransac_threshold=1000.0))
    tr.process(kp(trg, S_trg), 1)
    r = tr.process(kp(src, S_src), 2)
    assert r.certified and r.inliers == K
    # the tracker works from the float32 message values: so does the reference
    P_s = src.float().double().numpy()
    P_t = trg.float().double().numpy()
    Ss = np.linalg.inv(torch.linalg.inv(S_src).float().double().numpy())
    St = np.linalg.inv(torch.linalg.inv(S_trg).float().double().numpy())
    W = np.linalg.inv(St + Ss)
    T0 = r.T

    def cost(d):
        Rp = so3_exp(torch.tensor(d[3:])[None])[0].numpy() @ T0[:3, :3]
        tp = T0[:3, 3] + d[:3]
        e = P_t - P_s @ Rp.T - tp
        return float(np.einsum("ni,nij,nj->", e, W, e))

    h = 1e-4
    H = np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            ei, ej = np.eye(6)[i] * h, np.eye(6)[j] * h
            H[i, j] = (cost(ei + ej) - cost(ei - ej) - cost(-ei + ej) + cost(-ei - ej)) / (4 * h * h)
    ref = np.linalg.inv(H / 2) * tr.config.integrity.covariance_factor   # calibrated noise level
    assert np.allclose(r.covariance, ref, rtol=0.05, atol=1e-3 * np.abs(ref).max())


def _noisy_stereo_pair(seed, K=150, sigma_px=1.0, forward=1.0):
    """Keyframe and live StereoKeypoints of the same K points 3-25 m ahead, the live camera
    ``forward`` m ahead; pixel noise ``sigma_px`` on u_left, v and u_right of both, points and
    covariances computed from the noisy pixels (what a stereo front end hands over)."""
    from sdpr_loc.geometry.stereo import StereoCamera

    cam = StereoCamera(fx=200.0, fy=200.0, cx=159.5, cy=119.5, baseline=0.24, width=320, height=240)
    g = torch.Generator().manual_seed(seed)
    r = lambda n: torch.rand(n, generator=g, dtype=torch.float64)  # noqa: E731
    z = 3 + 22 * r(K)
    X, _ = cam.triangulate(torch.stack([20 + 280 * r(K), 20 + 200 * r(K), 200 * 0.24 / z], -1))
    desc = torch.nn.functional.normalize(torch.randn(1, K, 32, generator=g), dim=-1)

    def seen(P):
        uvd = cam.project(P)
        noise = sigma_px * torch.randn(K, 3, generator=g, dtype=torch.float64)
        uvd = uvd + torch.stack([noise[:, 0], noise[:, 1], noise[:, 0] - noise[:, 2]], -1)  # d = u_l - u_r
        pts, ok = cam.triangulate(uvd)
        W, _ = cam.inverse_covariance(uvd, sigma_px)
        return StereoKeypoints(uv=uvd[None, :, :2].float(), disparity=uvd[None, :, 2].float(),
                               points=pts[None].float(), inv_cov=W[None].float(), scores=torch.ones(1, K),
                               descriptors=desc, valid=ok[None])

    return seen(X), seen(X - torch.tensor([0.0, 0.0, forward], dtype=torch.float64))


def test_covariances_at_the_fused_points_remove_the_registration_bias():
    """Covariances taken at noisy measured points weight points measured too close more, which
    pulls the pose back towards the keyframe; refitting with them at the fused estimates does not
    (mean of 24 noisy 1 m forward steps, 1 px noise; the bias is shown to exist first)."""
    def mean_forward(refits):
        got = []
        for seed in range(24):
            kf, live = _noisy_stereo_pair(seed)
            tr = Tracker(TrackerConfig(mode="odometry", keyframe_distance=100.0, noise_refits=refits))
            tr.process(kf, 0)
            r = tr.process(live, 10**8)
            assert r.certified, r.reason
            got.append(r.T[2, 3])
        return float(np.mean(got)), float(np.std(got) / np.sqrt(len(got)))

    biased, _ = mean_forward(0)
    fused, se = mean_forward(2)
    assert biased < 0.97                      # the bias this fixes (about -4 %)
    assert abs(fused - 1.0) < max(0.01, 3 * se), (fused, se)


class _ScriptedFrame:
    """A live frame whose guided search (windows around the prior) finds a few far, imprecise
    matches while the search everywhere finds the keyframe's points well: what a prediction that
    is off gives. ``searches`` records which searches ran."""

    descriptor_dim = 8

    def __init__(self, T_kf_live, rng):
        self.T_kf_live, self.rng, self.searches = T_kf_live, rng, []

    def correspond(self, kf, prior=None, same_drive=False):
        from sdpr_loc.vision.frames import Correspondences

        self.searches.append("guided" if prior is not None else "exhaustive")
        idx = np.arange(24) if prior is not None else np.arange(len(kf.points))
        sd = 0.6 if prior is not None else 0.01        # imprecise: far points, wide windows
        R, t = self.T_kf_live[:3, :3], self.T_kf_live[:3, 3]
        src = (kf.points[idx] - t) @ R                  # keyframe points in the live camera
        src = src + sd * self.rng.standard_normal(src.shape)
        S = np.broadcast_to(np.eye(3) * sd * sd, (len(idx), 3, 3)).copy()
        return Correspondences(src, S, idx, len(kf.points))


def test_a_guided_pose_that_fails_integrity_is_searched_everywhere():
    """Windows around a wrong prediction give a certified but imprecise pose that FAILs
    integrity: unhurried, the same keyframe is searched exhaustively and its good pose is the
    frame's; hurried, the guided pose stands (withheld), no time is spent, and the search is
    owed: the next frame searches everywhere straight away (its windows, extrapolated from the
    imprecise pose, would miss as well), the one after is guided again."""
    from sdpr_loc.data.maps import KeyframeMap
    from sdpr_loc.vision.integrity import FAIL, PASS

    rng = np.random.default_rng(3)
    K = 80
    pts = np.c_[rng.uniform(-3, 3, (K, 2)), rng.uniform(4, 9, K)]
    kp = StereoKeypoints(uv=torch.zeros(1, K, 2), disparity=torch.ones(1, K),
                         points=torch.tensor(pts, dtype=torch.float32)[None],
                         inv_cov=(torch.eye(3) * 1e4).expand(1, K, 3, 3).clone(), scores=torch.ones(1, K),
                         descriptors=torch.nn.functional.normalize(torch.randn(1, K, 8), dim=-1),
                         valid=torch.ones(1, K, dtype=torch.bool))
    kmap = KeyframeMap.from_keyframes([(np.eye(4), 0, kp)])
    T_live = np.eye(4)
    T_live[:3, :3], T_live[:3, 3] = so3_exp(torch.tensor([0.0, 0.05, 0.0])).numpy(), [0.1, 0.0, 0.4]
    for hurry in (False, True):
        tr = Tracker(TrackerConfig(mode="map"), kmap)
        tr.set_pose(T_live, None, np.eye(6) * 1e-4)
        frame = _ScriptedFrame(T_live, np.random.default_rng(4))
        r = tr.process(frame, 10, hurry=hurry)
        assert r.certified, r.reason
        if hurry:
            assert frame.searches == ["guided"] and r.search == "guided"
            assert r.integrity == FAIL and any("precision" in why for why in r.integrity_reasons)
            owed = _ScriptedFrame(T_live, np.random.default_rng(5))
            r = tr.process(owed, 20, hurry=True)
            assert owed.searches == ["exhaustive"] and r.search == "exhaustive" and "owed" in r.reason
            assert r.integrity == PASS, r.integrity_reasons
            assert np.linalg.norm(r.T[:3, 3] - T_live[:3, 3]) < 0.02
            after = _ScriptedFrame(T_live, np.random.default_rng(6))
            assert tr.process(after, 30, hurry=True).search == "guided" and after.searches == ["guided"]
        else:
            assert frame.searches == ["guided", "exhaustive"] and r.search == "exhaustive"
            assert r.integrity == PASS, r.integrity_reasons
            assert np.linalg.norm(r.T[:3, 3] - T_live[:3, 3]) < 0.02
