"""registration_node: stereo keypoints -> certified camera pose.

Subscribes ``keypoints`` (sensor_msgs/PointCloud2 from keypoint_node; keep-last 1).
Publishes, stamped like the keypoints (i.e. like the images):
* ``certificate`` (diagnostic_msgs/DiagnosticArray) for EVERY frame: certified, margin, gap,
  min_eig, inliers, matches, solve time; level OK (certified), WARN (pose found but not
  certified, or frame skipped), ERROR (no pose: too few keypoints/matches/inliers, bad message);
* ``pose`` (geometry_msgs/PoseWithCovarianceStamped), ``odom`` (nav_msgs/Odometry) and ``path``
  (nav_msgs/Path) for certified frames only, unless ``publish_uncertified`` is true, and only
  when the integrity verdict is no worse than ``publish_integrity`` (default WARN). The pose is
  T_parent_camera of the left optical frame (parent: ``map_frame`` or ``odom_frame``); its
  covariance is the inverse Gauss-Newton Hessian of the registration cost at the optimum.

The logic is :class:`sdpr_loc.vision.tracker.Tracker`; this class moves messages in and out and
keeps the work in a worker thread.
"""
from __future__ import annotations

import sys
from typing import Any

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

from sdpr_loc.data.messages import stamp_to_ns

from . import pointcloud
from .managed import TrackingNode
from .pose_output import PoseOutputs
from .runtime import cpu_threads, load_map, run
from sdpr_loc.vision.integrity import publishable
from sdpr_loc.vision.tracker import ERROR, WARN, Tracker, TrackResult

NAME = "registration_node"
__all__ = ["RegistrationNode", "main"]


class RegistrationNode(TrackingNode):
    """Certified localization of keypoint clouds (``odometry`` or ``map`` mode); a lifecycle node
    (:mod:`sdpr_loc.nodes.managed`): configure loads the map, activate subscribes."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NAME, "registration", **node_kwargs)
        self._last_stamp = -1

    def configure(self, p: dict) -> None:
        cpu_threads(p["torch_threads"])
        keyframe_map = load_map(self, p)
        self.tracker = Tracker(self.tracker_config(p), keyframe_map)
        self.parent = p["map_frame"] if p["mode"] == "map" else p["odom_frame"]
        self.publish_uncertified = bool(p["publish_uncertified"])
        self._last_stamp = -1
        self.out = PoseOutputs(self, self.parent, max_path_length=int(p["max_path_length"]))

    def activate(self) -> None:
        self.create_subscription(PointCloud2, "keypoints", self.submit,
                                 QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                            reliability=ReliabilityPolicy.RELIABLE))

    def release(self) -> None:
        self.tracker = self.out = None

    # ----- worker -----
    def _process(self, msg: PointCloud2) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
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
        res = self.tracker.process(kp, stamp, hurry=lambda: self.behind)   # as the localization node
        publish = res.T is not None and (res.certified or self.publish_uncertified)
        publish = publish and publishable(res.integrity, self.p["publish_integrity"])
        if publish:
            self.out.publish(res, msg.header.frame_id or "camera")
        self._certificate(res, msg.header.frame_id, published=publish)

    def _on_error(self, msg: PointCloud2, exc: BaseException) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self.get_logger().warning(f"keypoints {stamp}: {type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
        self._certificate(TrackResult(stamp, ERROR, f"{type(exc).__name__}: {exc}"), msg.header.frame_id,
                          published=False)


def main(args: list[str] | None = None) -> int:
    return run(RegistrationNode, args)


if __name__ == "__main__":
    sys.exit(main())
