"""Localize every frame of a repeat drive against a keyframe map with one method.

Methods (front end, matching, pose block):
  learned-certified  the keyframe's network keypoints matched densely in the live frame (as the
                     network was trained, vision/dense.py), RANSAC + certified registration (poses
                     used only if certified)
  learned-svd        the same matches, RANSAC + Horn/SVD refit (no certificate)
  learned-keypoints  network keypoints of both frames, mutual-nearest-neighbour matching (what the
                     ROS registration node does with point clouds), RANSAC + certified registration
  orb-ransac         OpenCV ORB + stereo depth, descriptor matching, RANSAC (3-point Horn) and a
                     Gauss-Newton refinement with the stereo covariances on the inliers

Each frame is matched against the keyframes nearest the predicted pose (constant velocity from the
previous accepted poses; the first frame's prior is its ground truth unless kidnapped), as a
vehicle repeating a taught route would; dense matching searches windows around the predicted
pixels (``TrackerConfig.guided``; exhaustive when there is no prediction). Offline, every candidate
keyframe is tried and the registration with the most inliers is kept.

A frame counts as localized when its pose would be published: trusted (certified for the certified
methods) and an integrity verdict (:mod:`sdpr_loc.vision.integrity`) no worse than
``publish_integrity`` (default WARN: FAIL poses are not published, as in the nodes).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from sdpr_loc.data.dataset import MissingGroundTruthError
from sdpr_loc.data.maps import KeyframeMap, MapError
from sdpr_loc.errors import UsageError
from sdpr_loc.geometry.se3 import rotation_angle_deg
from sdpr_loc.vision.frontend import make_frames
from sdpr_loc.vision.integrity import WARNING, nees, publishable
from sdpr_loc.vision.tracker import Tracker, TrackerConfig

METHODS = {  # name: (front end, matching, registration)
    "learned-certified": ("network", "dense", "certified"),
    "learned-svd": ("network", "dense", "svd"),
    "learned-keypoints": ("network", "keypoints", "certified"),
    "orb-ransac": ("orb", "keypoints", "local"),
}


@dataclass
class FrameResult:
    """One repeat frame: estimate T (world frame; None when no trusted pose) against ground truth.

    localized: the pose is published (trusted and integrity allowed); T is kept for trusted poses
    that integrity withheld too (what no integrity gate would have published). nees: of T with
    its published ``covariance`` (ROS order, world frame) against ground truth. search: how the
    pose's matches were found ("guided", "exhaustive", "keypoints"; "" when none were).
    """

    stamp_ns: int
    T_gt: np.ndarray
    T: np.ndarray | None
    localized: bool
    certified: bool
    inliers: int
    ms: float
    reason: str
    integrity: str = "FAIL"
    nees: float = float("nan")
    covariance: np.ndarray | None = None
    stats: dict = field(default_factory=dict)
    search: str = ""

    def errors(self) -> tuple[float, float]:
        """(translation m, rotation deg); inf when not localized."""
        if self.T is None:
            return float("inf"), float("inf")
        E = np.linalg.inv(self.T_gt) @ self.T
        return float(np.linalg.norm(E[:3, 3])), rotation_angle_deg(E[:3, :3])


def check_method(name: str) -> tuple[str, str, str]:
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]


def keyframe_anchors(kmap: KeyframeMap, teach_stamps: np.ndarray, teach_poses: np.ndarray) -> np.ndarray:
    """(M, 4, 4) ``A_i = T_world_kf_i (teach ground truth) @ inv(T_map_kf_i)`` per keyframe.

    A map built from the teach drive's own odometry lives in its own frame and drifts; teach and
    repeat localizes RELATIVE to the taught keyframes. ``A_i @ T_map_cam`` (``i`` the keyframe the
    pose was measured against) is that pose in the world frame through keyframe ``i``'s true pose,
    so errors measure localization against the taught route, not the map's drift. For a map built
    from ground truth every ``A_i`` is the identity.
    """
    where = {int(s): j for j, s in enumerate(np.asarray(teach_stamps))}
    missing = [int(s) for s in kmap.stamps if int(s) not in where]
    if missing:
        raise ValueError(f"{len(missing)} map keyframe stamps (first {missing[0]}) are not frames of the "
                         "teach drive: pass the bag the map was built from")
    A = np.stack([teach_poses[where[int(s)]] @ np.linalg.inv(T) for s, T in zip(kmap.stamps, kmap.poses)])
    if not np.isfinite(A).all():
        raise ValueError("the teach drive has no ground truth at some map keyframes")
    return A


def check_map(name: str, kmap: KeyframeMap, where: str = "the map") -> None:
    """MapError (saying ``where``) when method ``name`` cannot localize in ``kmap``."""
    frontend = check_method(name)[0]
    if len(kmap) == 0:
        raise MapError(f"{where} has no keyframes")
    if kmap.frontend not in ("unknown", frontend):
        raise MapError(f"method {name!r} uses {frontend!r} descriptors but {where} was built with "
                       f"{kmap.frontend!r} (sdpr-loc build-map --frontend {frontend})")


def world_covariance(cov: np.ndarray, A: np.ndarray | None) -> np.ndarray:
    """ROS-ordered pose covariance in the map frame -> the world frame of anchor ``A`` (position and
    fixed-axis rotation errors both turn with A's rotation)."""
    if A is None:
        return cov
    M = np.kron(np.eye(2), A[:3, :3])
    return M @ cov @ M.T


def run_method(name: str, kmap: KeyframeMap, frames: Iterable, model_path: str = "", device: str = "cpu",
               tracker_config: TrackerConfig | None = None, progress=None, prior: bool = True,
               anchors: np.ndarray | None = None, publish_integrity: str = WARNING) -> list[FrameResult]:
    """Localize ``frames`` (StereoFrame with ground-truth pose) against ``kmap`` with method ``name``.

    prior: the first frame starts from its ground-truth pose (a vehicle starting where the route
    starts); False: it starts with no prior and must relocalize (kidnapped).
    anchors: :func:`keyframe_anchors` (maps not built from ground truth); poses are compared with
    ground truth through the keyframe they were measured against. The first frame's prior then
    goes the other way, through the keyframe nearest its true pose.
    publish_integrity: worst integrity verdict counted as localized (published).
    """
    publishable("OK", publish_integrity)   # a bad value fails before any work
    frontend, matching, registration = check_method(name)
    check_map(name, kmap)
    make_frame, matching_config, _ = make_frames(frontend, matching, model_path=model_path, device=device)
    base = tracker_config or TrackerConfig()
    # offline: every method tries all candidate keyframes and keeps the best (same search for all)
    tracker = Tracker(TrackerConfig(**{**base.__dict__, "mode": "map", "registration": registration,
                                       "exhaustive": True}), kmap, matching=matching_config)
    out: list[FrameResult] = []
    for i, fr in enumerate(frames):
        if fr.pose is None:
            where = f"bag {str(frames.path)!r}" if hasattr(frames, "path") else "the repeat drive"
            raise MissingGroundTruthError(f"{where}: frame {i} (stamp {fr.stamp_ns}) has no ground-truth "
                                          "pose: cannot evaluate")
        T_gt = np.asarray(fr.pose, dtype=np.float64)
        if i == 0 and prior:  # the first frame's prior, in the map frame
            T0 = T_gt
            if anchors is not None:
                world_kf = anchors @ kmap.poses                     # true keyframe poses
                j = int(np.argmin(np.linalg.norm(world_kf[:, :3, 3] - T_gt[:3, 3], axis=1)))
                T0 = np.linalg.inv(anchors[j]) @ T_gt
            tracker.set_pose(T0, int(fr.stamp_ns))
        t0 = time.perf_counter()
        res = tracker.process(make_frame(fr.left, fr.right, fr.camera), fr.stamp_ns)
        ms = 1e3 * (time.perf_counter() - t0)
        ok = res.T is not None and res.trusted
        T, cov, e = res.T, res.covariance, float("nan")
        if ok:
            A = anchors[res.keyframe] if anchors is not None and res.keyframe >= 0 else None
            T = T if A is None else A @ T
            cov = world_covariance(cov, A)
            e = nees(T, cov, T_gt)
        reason = "; ".join([res.reason] + res.integrity_reasons) if res.integrity_reasons else res.reason
        out.append(FrameResult(stamp_ns=int(fr.stamp_ns), T_gt=T_gt, T=T if ok else None,
                               localized=ok and publishable(res.integrity, publish_integrity),
                               certified=bool(res.certified), inliers=int(res.inliers), ms=ms, reason=reason,
                               integrity=res.integrity, nees=e, covariance=cov if ok else None,
                               stats=dict(res.integrity_stats), search=res.search))
        if progress is not None:
            progress.update(1)
    return out
