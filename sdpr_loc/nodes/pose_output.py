"""What every localizing node publishes, from a :class:`~sdpr_loc.vision.tracker.TrackResult`.

* ``certificate`` (diagnostic_msgs/DiagnosticArray) for EVERY frame: certified, margin, gap,
  min_eig, inliers, matches, solve time, search, and the integrity verdict (OK / WARN / FAIL,
  :mod:`sdpr_loc.vision.integrity`) with its reasons and statistics (chi2, chi2_dof, chi2_p,
  inlier_ratio, innovation, innovation_p, prediction_std, agreement, agreement_m, agreement_margin,
  position_std); level OK (certified), WARN (pose found but not certified or integrity WARN, or
  frame skipped), ERROR (no pose, or integrity FAIL); the message says why;
* ``pose`` (geometry_msgs/PoseWithCovarianceStamped), ``odom`` (nav_msgs/Odometry, twist in the
  child frame) and ``path`` (nav_msgs/Path, at most 2 Hz) for published frames, stamped like the
  images, in the parent frame (``map`` or ``odom``, REP 105).

The child is the robot's base when a static camera-to-base extrinsic is given (``T_cam_base``,
with ``base_frame``): ``T_parent_base = T_parent_cam T_cam_base``; else the camera's optical frame.
The covariance is re-expressed for the child's position (ROS orders it x y z, then rotations about
the parent's fixed axes, so its cross terms depend on where the child is).
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from sdpr_loc.geometry.se3 import R_from_quaternion_np, hat_np, so3_log_np
from sdpr_loc.vision.integrity import FAIL, PASS, STATISTICS, WARNING

from . import convert

__all__ = ["PoseOutputs", "parse_extrinsic", "move_covariance"]


def parse_extrinsic(values) -> np.ndarray | None:
    """[x, y, z, qx, qy, qz, qw] (the base in the camera optical frame: T_cam_base) -> (4, 4);
    None for an empty list. ValueError naming the problem otherwise."""
    v = [float(x) for x in (values or [])]
    if not v:
        return None
    if len(v) != 7 or not np.isfinite(v).all():
        raise ValueError(f"camera_to_base must be 7 finite numbers [x, y, z, qx, qy, qz, qw], got {v}")
    q = np.asarray(v[3:])
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > 1e-3:
        raise ValueError(f"camera_to_base quaternion must have unit norm, got |q| = {n:.6f}")
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R_from_quaternion_np(q / n), v[:3]
    return T


def move_covariance(cov: np.ndarray, t_from: np.ndarray, t_to: np.ndarray) -> np.ndarray:
    """ROS-ordered pose covariance (6, 6) of a frame at position ``t_from`` re-expressed for a
    rigidly attached frame at ``t_to`` (both in the parent frame): same rotation error, the
    translation error picks up ``(t_to - t_from) x`` rotation error."""
    G = np.eye(6)
    G[:3, 3:] = hat_np(np.asarray(t_from, float) - np.asarray(t_to, float))
    return G @ cov @ G.T


def camera_pose(T: np.ndarray, cov: np.ndarray, T_cam_base: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A pose of the published child (the base with ``T_cam_base``, else the camera) and its
    ROS-ordered covariance -> the camera's: what :meth:`PoseOutputs.publish` does, undone (an
    ``initialpose`` comes in the outputs' convention)."""
    if T_cam_base is None:
        return T, cov
    T_cam = T @ np.linalg.inv(T_cam_base)
    return T_cam, move_covariance(cov, T[:3, 3], T_cam[:3, 3])


class PoseOutputs:
    """Publishers and the bookkeeping (path, previous pose for the twist) of one node."""

    def __init__(self, node, parent: str, child: str = "", T_cam_base: np.ndarray | None = None,
                 max_path_length: int = 2000) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from nav_msgs.msg import Odometry, Path

        self.node, self.parent, self.child, self.T_cam_base = node, parent, child, T_cam_base
        self.path: deque = deque(maxlen=int(max_path_length))
        self._prev: tuple[int, np.ndarray] | None = None
        self._last_path_pub = 0.0
        create = node.create_lifecycle_publisher   # silent unless the node is active
        self.pub_pose = create(PoseWithCovarianceStamped, "pose", 10)
        self.pub_odom = create(Odometry, "odom", 10)
        self.pub_path = create(Path, "path", 1)
        self.pub_cert = create(DiagnosticArray, "certificate", 10)

    def set_path_length(self, n: int) -> None:
        self.path = deque(self.path, maxlen=int(n))

    def reset(self) -> None:
        self.path.clear()
        self._prev = None

    def publish(self, res, camera_frame: str) -> None:
        """pose / odom / path of a result with a pose (the caller decides whether it is published)."""
        from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
        from nav_msgs.msg import Odometry, Path

        T, cov = res.T, np.asarray(res.covariance, dtype=np.float64)
        child = camera_frame or "camera"
        if self.T_cam_base is not None:
            T_base = T @ self.T_cam_base
            cov = move_covariance(cov, T[:3, 3], T_base[:3, 3])
            T, child = T_base, self.child or "base_link"
        hdr = convert.header(res.stamp_ns, self.parent)
        pose = convert.pose_to_msg(T)
        cov_list = [float(x) for x in cov.reshape(36)]
        pw = PoseWithCovarianceStamped(header=hdr)
        pw.pose.pose, pw.pose.covariance = pose, cov_list
        self.pub_pose.publish(pw)
        od = Odometry(header=hdr, child_frame_id=child)
        od.pose.pose, od.pose.covariance = pose, cov_list
        if self._prev is not None and res.stamp_ns > self._prev[0]:
            dt = (res.stamp_ns - self._prev[0]) * 1e-9
            Tp = self._prev[1]
            v = T[:3, :3].T @ (T[:3, 3] - Tp[:3, 3]) / dt          # in the child frame
            w = so3_log_np(Tp[:3, :3].T @ T[:3, :3]) / dt
            od.twist.twist.linear.x, od.twist.twist.linear.y, od.twist.twist.linear.z = map(float, v)
            od.twist.twist.angular.x, od.twist.twist.angular.y, od.twist.twist.angular.z = map(float, w)
        self._prev = (res.stamp_ns, T)
        self.pub_odom.publish(od)
        self.path.append(PoseStamped(header=hdr, pose=pose))
        now = time.monotonic()
        if now - self._last_path_pub > 0.5:   # the path grows: at most 2 Hz
            self._last_path_pub = now
            self.pub_path.publish(Path(header=hdr, poses=list(self.path)))

    def certificate(self, res, frame_id: str, published: bool, values: dict) -> None:
        """The per-frame certificate message (``values``: node-specific extras)."""
        from diagnostic_msgs.msg import DiagnosticArray

        vals = {
            "certified": bool(res.certified), "published": bool(published), "margin": res.margin,
            "gap": res.gap, "min_eig": res.min_eig, "inliers": res.inliers, "matches": res.matches,
            "keypoints": res.keypoints, "solve_time_ms": res.solve_ms, "keyframe": res.keyframe,
            "new_keyframe": bool(res.new_keyframe), "method": res.method, "search": res.search,
            "integrity": res.integrity, "integrity_reasons": "; ".join(res.integrity_reasons),
            **{k: res.integrity_stats.get(k, float("nan")) for k in STATISTICS},
            **values, "stamp_ns": res.stamp_ns}
        message = res.reason or ("certified" if res.certified else "no pose")
        level = res.level
        if res.T is not None and res.integrity != PASS:   # certified and right are separate verdicts
            message = (f"{message}; " if res.reason else "") + f"integrity {res.integrity}" + (
                f" ({'published' if published else 'not published'}): " + "; ".join(res.integrity_reasons))
            level = max(level, 2 if res.integrity == FAIL else 1 if res.integrity == WARNING else level)
        status = convert.diagnostic(level, f"sdpr_loc: {self.node.get_name()}", message, vals,
                                    hardware_id=frame_id)
        self.pub_cert.publish(DiagnosticArray(header=convert.header(res.stamp_ns, self.parent), status=[status]))
        if level >= 2:
            self.node.get_logger().warning(f"frame {res.stamp_ns}: {message}", throttle_duration_sec=2.0)
