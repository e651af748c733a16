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

Each frame is matched against the keyframes nearest the previous accepted pose (the first frame's
prior is its ground truth), as a vehicle repeating a taught route would; offline, every candidate
keyframe is tried and the registration with the most inliers is kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from sdpr_loc.data.dataset import MissingGroundTruthError
from sdpr_loc.data.maps import KeyframeMap, MapError
from sdpr_loc.errors import UsageError
from sdpr_loc.vision.frontend import make_extractor
from sdpr_loc.vision.tracker import Tracker, TrackerConfig

METHODS = {  # name: (front end, matching, registration)
    "learned-certified": ("network", "dense", "certified"),
    "learned-svd": ("network", "dense", "svd"),
    "learned-keypoints": ("network", "keypoints", "certified"),
    "orb-ransac": ("orb", "keypoints", "local"),
}


@dataclass
class FrameResult:
    """One repeat frame: estimate T_map_camera (None when not localized) against ground truth."""

    stamp_ns: int
    T_gt: np.ndarray
    T: np.ndarray | None
    localized: bool
    certified: bool
    inliers: int
    ms: float
    reason: str

    def errors(self) -> tuple[float, float]:
        """(translation m, rotation deg); inf when not localized."""
        if self.T is None:
            return float("inf"), float("inf")
        E = np.linalg.inv(self.T_gt) @ self.T
        c = np.clip((np.trace(E[:3, :3]) - 1) / 2, -1.0, 1.0)
        return float(np.linalg.norm(E[:3, 3])), float(np.degrees(np.arccos(c)))


def check_method(name: str) -> tuple[str, str, str]:
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]


def check_map(name: str, kmap: KeyframeMap, where: str = "the map") -> None:
    """MapError (saying ``where``) when method ``name`` cannot localize in ``kmap``."""
    frontend = check_method(name)[0]
    if len(kmap) == 0:
        raise MapError(f"{where} has no keyframes")
    if kmap.frontend not in ("unknown", frontend):
        raise MapError(f"method {name!r} uses {frontend!r} descriptors but {where} was built with "
                       f"{kmap.frontend!r} (sdpr-loc build-map --frontend {frontend})")


def run_method(name: str, kmap: KeyframeMap, frames: Iterable, model_path: str = "", device: str = "cpu",
               tracker_config: TrackerConfig | None = None, progress=None) -> list[FrameResult]:
    """Localize ``frames`` (StereoFrame with ground-truth pose) against ``kmap`` with method ``name``."""
    frontend, matching, registration = check_method(name)
    check_map(name, kmap)
    if matching == "dense":
        from sdpr_loc.vision.dense import DenseFrame
        from sdpr_loc.vision.frontend import load_model

        network, cfg, _ = load_model(model_path, device)
    else:
        extract, _ = make_extractor(frontend, model_path=model_path, device=device)
    base = tracker_config or TrackerConfig()
    # offline: every method tries all candidate keyframes and keeps the best (same search for all)
    tracker = Tracker(TrackerConfig(**{**base.__dict__, "mode": "map", "registration": registration,
                                       "exhaustive": True}), kmap)
    out: list[FrameResult] = []
    for i, fr in enumerate(frames):
        if fr.pose is None:
            where = f"bag {str(frames.path)!r}" if hasattr(frames, "path") else "the repeat drive"
            raise MissingGroundTruthError(f"{where}: frame {i} (stamp {fr.stamp_ns}) has no ground-truth "
                                          "pose: cannot evaluate")
        if i == 0:
            tracker.last_T = np.asarray(fr.pose, dtype=np.float64)  # prior for the first frame
        t0 = time.perf_counter()
        if matching == "dense":
            res = tracker.process_dense(DenseFrame(network, fr.left, fr.right, fr.camera, cfg), fr.stamp_ns)
        else:
            res = tracker.process(extract(fr.left, fr.right, fr.camera), fr.stamp_ns)
        ms = 1e3 * (time.perf_counter() - t0)
        ok = res.T is not None and res.trusted
        out.append(FrameResult(stamp_ns=int(fr.stamp_ns), T_gt=np.asarray(fr.pose, dtype=np.float64),
                               T=res.T if ok else None, localized=ok, certified=bool(res.certified),
                               inliers=int(res.inliers), ms=ms, reason=res.reason))
        if progress is not None:
            progress.update(1)
    return out
