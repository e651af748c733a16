"""registration_node: stereo keypoints -> certified camera pose.

Subscribes ``keypoints`` (sensor_msgs/PointCloud2 from keypoint_node; keep-last 1).
Publishes, stamped like the keypoints (i.e. like the images):
* ``certificate`` (diagnostic_msgs/DiagnosticArray) for EVERY frame: certified, margin, gap,
  min_eig, inliers, matches, solve time; level OK (certified), WARN (pose found but not
  certified, or frame skipped), ERROR (no pose: too few keypoints/matches/inliers, bad message);
* ``pose`` (geometry_msgs/PoseWithCovarianceStamped), ``odom`` (nav_msgs/Odometry) and ``path``
  (nav_msgs/Path) for certified frames only, unless ``publish_uncertified`` is true. The pose is
  T_parent_camera of the left optical frame (parent: ``map_frame`` or ``odom_frame``); its
  covariance is the inverse Gauss-Newton Hessian of the registration cost at the optimum.

The logic is :class:`sdpr_loc.vision.tracker.Tracker`; this class moves messages in and out and
keeps the work in a worker thread.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry, Path
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

from . import convert, pointcloud
from .params import declare
from .runtime import Worker, run
from sdpr_loc.vision.tracker import ERROR, WARN, Tracker, TrackerConfig, TrackResult

NAME = "registration_node"
__all__ = ["RegistrationNode", "main"]
_TRACKER_KEYS = ("match_ratio", "min_matches", "min_inliers", "ransac_iterations", "ransac_threshold",
                 "keyframe_distance", "keyframe_angle", "max_lost", "map_candidates")


def _so3_log(R: np.ndarray) -> np.ndarray:
    c = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    a = float(np.arccos(c))
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2
    return w * (a / np.sin(a)) if a > 1e-9 else w


class RegistrationNode(Node):
    """Certified localization of keypoint clouds (``odometry`` or ``map`` mode)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NAME, **node_kwargs)
        p = declare(self, NAME, on_change=self._on_params)
        self.p = p
        if p["torch_threads"] > 0:
            import torch

            torch.set_num_threads(int(p["torch_threads"]))
        keyframe_map = None
        if p["mode"] == "map":
            from sdpr_loc.data.maps import KeyframeMap

            if not p["map_path"]:
                raise ValueError("mode 'map' needs map_path (a .npz from `sdpr-loc build-map`)")
            keyframe_map = KeyframeMap.load(p["map_path"])   # MapError is a ValueError
            self.get_logger().info(f"map {p['map_path']}: {len(keyframe_map)} keyframes, "
                                   f"frontend {keyframe_map.frontend}")
        self.tracker = Tracker(self._tracker_config(p), keyframe_map)
        self.parent = p["map_frame"] if p["mode"] == "map" else p["odom_frame"]
        self.publish_uncertified = bool(p["publish_uncertified"])
        self.path = deque(maxlen=int(p["max_path_length"]))
        self._last_stamp = -1
        self._prev: tuple[int, np.ndarray] | None = None
        self._last_path_pub = 0.0
        self.counts = {"frames": 0, "certified": 0, "published": 0}
        self.create_subscription(PointCloud2, "keypoints", self._on_cloud,
                                 QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                            reliability=ReliabilityPolicy.RELIABLE))
        self.pub_pose = self.create_publisher(PoseWithCovarianceStamped, "pose", 10)
        self.pub_odom = self.create_publisher(Odometry, "odom", 10)
        self.pub_path = self.create_publisher(Path, "path", 1)
        self.pub_cert = self.create_publisher(DiagnosticArray, "certificate", 10)
        self.worker = Worker(self._process, self._on_error, maxlen=1, name="registration")

    # ----- parameters -----
    @staticmethod
    def _tracker_config(p: dict) -> TrackerConfig:
        kw = {k: p[k] for k in _TRACKER_KEYS}
        return TrackerConfig(mode=p["mode"], seed=int(p["seed"]), **kw)

    def _on_params(self, changes: dict) -> str:
        merged = {**self.p, **changes}
        try:
            cfg = self._tracker_config(merged)
        except ValueError as err:
            return str(err)
        self.p = merged
        self.tracker.config = cfg
        self.publish_uncertified = bool(merged["publish_uncertified"])
        if "max_path_length" in changes:
            self.path = deque(self.path, maxlen=int(merged["max_path_length"]))
        return ""

    # ----- callback and worker -----
    def _on_cloud(self, msg: PointCloud2) -> None:
        self.worker.submit(msg)

    def _process(self, msg: PointCloud2) -> None:
        stamp = convert.stamp_to_ns(msg.header.stamp)
        self.counts["frames"] += 1
        if stamp <= self._last_stamp:
            why = (f"keypoints at {stamp} ns not newer than the last ({self._last_stamp} ns): "
                   "out of order or duplicate, skipped")
            self._certificate(TrackResult(stamp, WARN, why), msg.header.frame_id, published=False)
            return
        self._last_stamp = stamp
        try:
            kp = pointcloud.from_msg(msg)
        except ValueError as err:
            self._certificate(TrackResult(stamp, ERROR, f"bad keypoint cloud: {err}"), msg.header.frame_id,
                              published=False)
            return
        res = self.tracker.process(kp, stamp)
        publish = res.T is not None and (res.certified or self.publish_uncertified)
        if publish:
            self._publish_pose(res, msg.header.frame_id or "camera")
        if res.certified:
            self.counts["certified"] += 1
        self._certificate(res, msg.header.frame_id, published=publish)

    def _on_error(self, msg: PointCloud2, exc: BaseException) -> None:
        stamp = convert.stamp_to_ns(msg.header.stamp)
        self.get_logger().warning(f"keypoints {stamp}: {type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
        self._certificate(TrackResult(stamp, ERROR, f"{type(exc).__name__}: {exc}"), msg.header.frame_id,
                          published=False)

    # ----- outputs -----
    def _publish_pose(self, res: TrackResult, child: str) -> None:
        hdr = convert.header(res.stamp_ns, self.parent)
        pose = convert.pose_to_msg(res.T)
        cov = [float(x) for x in np.asarray(res.covariance, dtype=np.float64).reshape(36)]
        pw = PoseWithCovarianceStamped(header=hdr)
        pw.pose.pose, pw.pose.covariance = pose, cov
        self.pub_pose.publish(pw)
        od = Odometry(header=hdr, child_frame_id=child)
        od.pose.pose, od.pose.covariance = pose, cov
        if self._prev is not None and res.stamp_ns > self._prev[0]:
            dt = (res.stamp_ns - self._prev[0]) * 1e-9
            Tp = self._prev[1]
            v = res.T[:3, :3].T @ (res.T[:3, 3] - Tp[:3, 3]) / dt          # in the child frame
            w = _so3_log(Tp[:3, :3].T @ res.T[:3, :3]) / dt
            od.twist.twist.linear.x, od.twist.twist.linear.y, od.twist.twist.linear.z = map(float, v)
            od.twist.twist.angular.x, od.twist.twist.angular.y, od.twist.twist.angular.z = map(float, w)
        self._prev = (res.stamp_ns, res.T)
        self.pub_odom.publish(od)
        self.path.append(PoseStamped(header=hdr, pose=pose))
        now = time.monotonic()
        if now - self._last_path_pub > 0.5:   # the path grows: at most 2 Hz
            self._last_path_pub = now
            self.pub_path.publish(Path(header=hdr, poses=list(self.path)))
        self.counts["published"] += 1

    def _certificate(self, res: TrackResult, frame_id: str, published: bool) -> None:
        values = {
            "certified": bool(res.certified), "published": bool(published), "margin": res.margin,
            "gap": res.gap, "min_eig": res.min_eig, "inliers": res.inliers, "matches": res.matches,
            "keypoints": res.keypoints, "solve_time_ms": res.solve_ms, "keyframe": res.keyframe,
            "new_keyframe": bool(res.new_keyframe), "method": res.method, "mode": self.p["mode"],
            "dropped": self.worker.queue.dropped, "stamp_ns": res.stamp_ns}
        message = res.reason or ("certified" if res.certified else "no pose")
        status = convert.diagnostic(res.level, f"sdpr_loc: {self.get_name()}", message, values,
                                    hardware_id=frame_id)
        self.pub_cert.publish(DiagnosticArray(header=convert.header(res.stamp_ns, self.parent), status=[status]))
        if res.level >= ERROR:
            self.get_logger().warning(f"frame {res.stamp_ns}: {message}", throttle_duration_sec=2.0)

    def close(self) -> None:
        self.worker.stop()


def main(args: list[str] | None = None) -> int:
    return run(RegistrationNode, args)


if __name__ == "__main__":
    sys.exit(main())
