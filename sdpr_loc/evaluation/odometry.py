"""Stereo visual odometry over a drive with each method, and its KITTI-style accuracy metrics.

Methods (each frame is registered against the previous one; poses chain from the first frame's
ground truth):
  orb-certified      ORB stereo keypoints (vision/classical), the :class:`Tracker` in odometry
                     mode: descriptor matches, RANSAC, certified matrix-weighted registration;
                     a pose is reported only when certified
  orb-svd            the same matches, RANSAC + Horn/SVD refit (no certificate)
  learned-certified  the network's keypoints of the previous frame matched densely in the live
                     frame (as trained, vision/dense.py), RANSAC + certified registration
  opencv-pnp         what a user would write with OpenCV alone: ORB on the left images,
                     StereoSGBM depth of the previous frame, ratio-tested Hamming matches,
                     ``cv2.solvePnPRansac`` then ``cv2.solvePnPRefineLM`` on the inliers

A frame whose method gives no trusted pose reports none (``T = None``) and the chain continues
from the last reported pose. Metrics (:func:`summarize`) use ground truth only for scoring.
The Tracker is called through :func:`_tracker_step` only, with a keypoint frame (ORB) or a dense
frame (learned: the previous keyframe's keypoints found in the live dense descriptors, guided by
the constant-velocity prior), so a change of its API is adapted in one place.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from sdpr_loc.geometry.se3 import rotation_angle_deg

__all__ = ["METHODS", "OdomFrame", "run_odometry", "summarize", "segment_lengths", "kitti_errors",
           "relative_errors", "disparity_range", "distances"]

METHODS = ("orb-certified", "orb-svd", "learned-certified", "opencv-pnp")


@dataclass
class OdomFrame:
    """One frame: estimate ``T (4, 4)`` T_world_camera (None: no pose reported), ground truth,
    whether the reported pose is certified, and the processing time."""

    stamp_ns: int
    T_gt: np.ndarray
    T: np.ndarray | None
    certified: bool
    inliers: int
    ms: float
    reason: str = ""


def disparity_range(camera, nearest_m: float = 3.0, minimum: int = 64) -> int:
    """Stereo search range in pixels for points down to ``nearest_m`` (at least ``minimum``):
    fx * B / z, so it scales with the camera instead of assuming one image size."""
    return int(max(minimum, math.ceil(camera.fx * camera.baseline / nearest_m)))


# ------------------------------------------------------------------------------------------------
# per-method frame-to-frame steps
# ------------------------------------------------------------------------------------------------
def _tracker_step(tracker, frame, stamp_ns: int):
    """THE adapter to :class:`~sdpr_loc.vision.tracker.Tracker`'s public API (one place to adapt).

    Returns (T_parent_camera or None, certified, inliers, reason)."""
    res = tracker.process(frame, stamp_ns)
    ok = res.T is not None and res.trusted
    return (res.T if ok else None), bool(res.certified and ok), int(res.inliers), res.reason


class _OrbOdometry:
    def __init__(self, registration: str, n_features: int, T0: np.ndarray):
        from sdpr_loc.vision.tracker import Tracker, TrackerConfig

        self.n_features = n_features
        # every frame becomes the next keyframe: frame-to-frame, as the other methods
        cfg = TrackerConfig(mode="odometry", registration=registration, keyframe_distance=0.0)
        self.tracker = Tracker(cfg, initial_pose=T0)

    def __call__(self, fr):
        from sdpr_loc.vision.classical import orb_keypoints

        kp = orb_keypoints(fr.left, fr.right, fr.camera, n_features=self.n_features,
                           max_disparity=disparity_range(fr.camera))
        return _tracker_step(self.tracker, kp, fr.stamp_ns)


class _DenseOdometry:
    """Frame to frame with dense frames: the previous frame's network keypoints found in the live
    frame's dense descriptors (the trained task), through the same Tracker as orb-certified."""

    def __init__(self, model_path: str, device: str, T0: np.ndarray):
        from sdpr_loc.vision.frontend import load_model

        self.network, self.cfg, _ = load_model(model_path, device)
        self.T0, self.tracker = T0, None

    def __call__(self, fr):
        import dataclasses

        from sdpr_loc.vision.dense import DenseFrame
        from sdpr_loc.vision.tracker import Tracker, TrackerConfig

        cfg = dataclasses.replace(self.cfg, max_disparity=disparity_range(fr.camera))
        if self.tracker is None:   # every frame becomes the next keyframe, as the other methods
            self.tracker = Tracker(TrackerConfig(mode="odometry", keyframe_distance=0.0),
                                   initial_pose=self.T0, matching=cfg)
        return _tracker_step(self.tracker, DenseFrame(self.network, fr.left, fr.right, fr.camera, cfg),
                             fr.stamp_ns)


class _PnpOdometry:
    """OpenCV-only stereo VO (the peer a user would write)."""

    def __init__(self, n_features: int, T0: np.ndarray, reproj_px: float = 1.0):
        import cv2

        self.orb = cv2.ORB_create(nfeatures=n_features)
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.reproj_px = reproj_px
        self.prev = None
        self.T = T0

    def _frame(self, fr):
        import cv2

        from sdpr_loc.vision.classical import as_uint8

        L, R = as_uint8(fr.left, "left"), as_uint8(fr.right, "right")
        kps, desc = self.orb.detectAndCompute(L, None)
        nd = 16 * int(math.ceil(disparity_range(fr.camera) / 16))
        sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=nd, blockSize=5, P1=8 * 25, P2=32 * 25,
                                     uniquenessRatio=10, speckleWindowSize=100, speckleRange=2,
                                     mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
        disp = sgbm.compute(L, R).astype(np.float32) / 16.0
        return kps, desc, disp

    def __call__(self, fr):
        import cv2

        cam = fr.camera
        cur = self._frame(fr)
        prev = self.prev
        if prev is None:
            self.prev = cur
            return self.T, False, 0, "first frame: odometry origin"
        kps0, d0, disp0 = prev
        kps1, d1, _ = cur
        if d0 is None or d1 is None:
            return None, False, 0, "no ORB features"
        pairs = self.matcher.knnMatch(d0, d1, k=2)
        good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
        obj, img = [], []
        for m in good:
            u, v = kps0[m.queryIdx].pt
            d = disp0[int(round(v)), int(round(u))]
            if d > 0.5:
                z = cam.fx * cam.baseline / d
                obj.append(((u - cam.cx) * z / cam.fx, (v - cam.cy) * z / cam.fy, z))
                img.append(kps1[m.trainIdx].pt)
        if len(obj) < 6:
            return None, False, 0, f"too few stereo matches ({len(obj)})"
        obj, img = np.asarray(obj, np.float64), np.asarray(img, np.float64)
        K = np.array([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]], dtype=np.float64)
        ok, rvec, tvec, inl = cv2.solvePnPRansac(obj, img, K, None, iterationsCount=500,
                                                 reprojectionError=self.reproj_px, confidence=0.999,
                                                 flags=cv2.SOLVEPNP_EPNP)
        if not ok or inl is None or len(inl) < 6:
            return None, False, 0, "solvePnPRansac failed"
        inl = inl[:, 0]
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], K, None, rvec, tvec)
        T_cur_prev = np.eye(4)
        T_cur_prev[:3, :3], T_cur_prev[:3, 3] = cv2.Rodrigues(rvec)[0], tvec[:, 0]
        self.T = self.T @ np.linalg.inv(T_cur_prev)
        self.prev = cur  # only a posed frame becomes the reference of the next one
        return self.T, False, int(len(inl)), ""


def run_odometry(method: str, frames: Iterable, model_path: str = "", device: str = "cpu",
                 n_features: int = 2000, progress=None) -> list[OdomFrame]:
    """Odometry of ``frames`` (StereoFrame with ground truth) with ``method``; see the module doc."""
    if method not in METHODS:
        raise ValueError(f"unknown odometry method {method!r}; choose from {', '.join(METHODS)}")
    out: list[OdomFrame] = []
    step = None
    for i, fr in enumerate(frames):
        if fr.pose is None:
            raise ValueError(f"frame {i} (stamp {fr.stamp_ns}) has no ground-truth pose: cannot evaluate")
        if step is None:
            T0 = np.asarray(fr.pose, dtype=np.float64)
            if method in ("orb-certified", "orb-svd"):
                step = _OrbOdometry(method.split("-")[1], n_features, T0)
            elif method == "learned-certified":
                step = _DenseOdometry(model_path, device, T0)
            else:
                step = _PnpOdometry(n_features, T0)
        t0 = time.perf_counter()
        T, certified, inliers, reason = step(fr)
        ms = 1e3 * (time.perf_counter() - t0)
        if i == 0:  # the origin is given, not estimated
            T, certified = np.asarray(fr.pose, dtype=np.float64), method.endswith("certified")
        out.append(OdomFrame(int(fr.stamp_ns), np.asarray(fr.pose, dtype=np.float64),
                             None if T is None else np.array(T, dtype=np.float64), certified, inliers, ms, reason))
        if progress is not None:
            progress.update(1)
    return out


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
def distances(poses: np.ndarray) -> np.ndarray:
    """Cumulative path length (N,) of (N, 4, 4) poses."""
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def segment_lengths(path_m: float) -> list[float]:
    """KITTI's 100..800 m segments where the drive is long enough; shorter drives use multiples
    of 10 m up to the path length, and drives under 10 m quarters of it."""
    kitti = [float(x) for x in range(100, 900, 100) if x <= path_m]
    if kitti:
        return kitti
    tens = [float(x) for x in range(10, int(path_m) + 1, 10)]
    return tens or [path_m / 4, path_m / 2, 3 * path_m / 4]


def kitti_errors(gt: np.ndarray, est: np.ndarray, lengths: list[float]) -> tuple[float, float, int]:
    """KITTI devkit metric: for each start frame and segment length L, the relative pose error
    over the first frame at least L further along the ground-truth path; returns mean translation
    error in % of L, mean rotation error in deg/100 m, and the number of segments. ``est`` rows
    with NaN (no pose) are skipped."""
    dist = distances(gt)
    t_err, r_err = [], []
    ok = ~np.isnan(est[:, 0, 0])
    for i in np.flatnonzero(ok):
        for L in lengths:
            j = int(np.searchsorted(dist, dist[i] + L))
            if j >= len(gt) or not ok[j]:
                continue
            E = np.linalg.inv(np.linalg.inv(gt[i]) @ gt[j]) @ (np.linalg.inv(est[i]) @ est[j])
            t_err.append(np.linalg.norm(E[:3, 3]) / L)
            r_err.append(rotation_angle_deg(E[:3, :3]) / L)
    if not t_err:
        return float("nan"), float("nan"), 0
    return 100.0 * float(np.mean(t_err)), 100.0 * float(np.mean(r_err)), len(t_err)


def relative_errors(gt: np.ndarray, est: np.ndarray) -> np.ndarray:
    """Per consecutive frame pair with both poses: (translation m, rotation deg), shape (K, 2)."""
    out = []
    for i in range(1, len(gt)):
        if np.isnan(est[i, 0, 0]) or np.isnan(est[i - 1, 0, 0]):
            continue
        E = np.linalg.inv(np.linalg.inv(gt[i - 1]) @ gt[i]) @ (np.linalg.inv(est[i - 1]) @ est[i])
        out.append((np.linalg.norm(E[:3, 3]), rotation_angle_deg(E[:3, :3])))
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def _estimates(results: list[OdomFrame]) -> np.ndarray:
    return np.stack([r.T if r.T is not None else np.full((4, 4), np.nan) for r in results])


def summarize(name: str, results: list[OdomFrame]) -> dict:
    """One row of odometry.csv: drift at the last reported frame (% of the ground-truth path up to
    it), per-frame relative errors, KITTI t_rel (%) / r_rel (deg/100 m), certified share of the
    reported poses (frame 0, the given origin, excluded) and ms per frame."""
    gt = np.stack([r.T_gt for r in results])
    est = _estimates(results)
    rep = ~np.isnan(est[:, 0, 0])
    last = int(np.flatnonzero(rep)[-1])
    dist = distances(gt)
    drift = 100.0 * float(np.linalg.norm(est[last, :3, 3] - gt[last, :3, 3]) / max(dist[last], 1e-9))
    rpe = relative_errors(gt, est)
    lengths = segment_lengths(float(dist[-1]))
    t_rel, r_rel, nseg = kitti_errors(gt, est, lengths)
    later = results[1:]
    n_rep = sum(r.T is not None for r in later)
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan")  # noqa: E731
    return {
        "method": name, "frames": len(results), "path_m": float(dist[-1]),
        "reported_rate": n_rep / max(len(later), 1),
        "drift_pct": drift,
        "rpe_trans_median_m": pct(rpe[:, 0], 50), "rpe_trans_p90_m": pct(rpe[:, 0], 90),
        "rpe_rot_median_deg": pct(rpe[:, 1], 50), "rpe_rot_p90_deg": pct(rpe[:, 1], 90),
        "t_rel_pct": t_rel, "r_rel_deg_per_100m": r_rel,
        "segment_lengths_m": " ".join(f"{L:g}" for L in lengths), "segments": nseg,
        "certified_rate": (sum(r.certified for r in later if r.T is not None) / n_rep) if n_rep else float("nan"),
        "uncertified_reported": sum((r.T is not None) and not r.certified for r in later),
        "ms_per_frame": float(np.mean([r.ms for r in results])),
    }
