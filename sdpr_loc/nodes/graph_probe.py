"""Drive the nodes from outside: publish stereo frames, collect poses and certificates per stamp.

Shared by the node tests, ``bench/latency.py`` and the end-to-end demo runner, which all need
the same two things: a camera stand-in (:class:`StereoPublisher`) and a listener that records
what came back and when (:class:`OutputListener`), keyed by the image stamp.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from sdpr_loc.data.messages import stamp_to_ns

from . import convert

__all__ = ["StereoPublisher", "OutputListener", "Received", "certificate_values"]


class StereoPublisher:
    """Publishes a stereo frame as the four topics a rectifying camera driver would."""

    def __init__(self, node, encoding: str = "mono8",
                 frame_ids: tuple[str, str] = ("stereo_left_optical_frame", "stereo_right_optical_frame")):
        qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self.node, self.encoding, self.frame_ids = node, encoding, frame_ids
        self.left = node.create_publisher(Image, "stereo/left/image_rect", qos)
        self.right = node.create_publisher(Image, "stereo/right/image_rect", qos)
        self.left_info = node.create_publisher(CameraInfo, "stereo/left/camera_info", qos)
        self.right_info = node.create_publisher(CameraInfo, "stereo/right/camera_info", qos)

    def publish(self, left: np.ndarray, right: np.ndarray, camera, stamp_ns: int) -> float:
        """Publish one pair (infos first); returns the monotonic time the right image went out."""
        li, ri = convert.camera_info_msgs(camera, stamp_ns, self.frame_ids)
        lm = convert.image_to_msg(left, stamp_ns, self.frame_ids[0], self.encoding)
        rm = convert.image_to_msg(right, stamp_ns, self.frame_ids[1], self.encoding)
        self.left_info.publish(li)
        self.right_info.publish(ri)
        self.left.publish(lm)
        t = time.monotonic()
        self.right.publish(rm)
        return t

    def publish_frame(self, frame) -> float:
        return self.publish(frame.left, frame.right, frame.camera, frame.stamp_ns)

    def subscribers(self) -> int:
        return min(p.get_subscription_count() for p in (self.left, self.right))


def certificate_values(msg: DiagnosticArray) -> dict[str, Any]:
    """The first status of a certificate message as a dict (level, message, and its key/values)."""
    st = msg.status[0]
    level = st.level[0] if isinstance(st.level, bytes) else int(st.level)
    out: dict[str, Any] = {"level": level, "message": st.message}
    out.update({kv.key: kv.value for kv in st.values})
    return out


@dataclass
class Received:
    pose: dict[int, tuple[float, Any]] = field(default_factory=dict)         # stamp -> (t, msg)
    certificate: dict[int, tuple[float, dict]] = field(default_factory=dict)
    diagnostics: list[dict] = field(default_factory=list)


class OutputListener:
    """Records pose, certificate and /diagnostics messages with their monotonic arrival times."""

    def __init__(self, node, namespace: str = "") -> None:
        ns = namespace.rstrip("/") + "/" if namespace else ""
        self.got = Received()
        self.lock = threading.Lock()
        self.event = threading.Condition(self.lock)
        node.create_subscription(PoseWithCovarianceStamped, ns + "pose", self._on_pose, 50)
        node.create_subscription(DiagnosticArray, ns + "certificate", self._on_cert, 50)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def _on_pose(self, msg) -> None:
        with self.lock:
            self.got.pose[stamp_to_ns(msg.header.stamp)] = (time.monotonic(), msg)
            self.event.notify_all()

    def _on_cert(self, msg) -> None:
        with self.lock:
            stamp = stamp_to_ns(msg.header.stamp)
            self.got.certificate[stamp] = (time.monotonic(), certificate_values(msg))
            self.event.notify_all()

    def _on_diag(self, msg) -> None:
        with self.lock:
            for st in msg.status:
                d = {"level": st.level[0] if isinstance(st.level, bytes) else int(st.level), "name": st.name,
                     "message": st.message}
                d.update({kv.key: kv.value for kv in st.values})
                self.got.diagnostics.append(d)
            self.event.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        """Wait until ``predicate(received)`` holds (True) or ``timeout`` s pass (False)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate(self.got):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.event.wait(min(left, 0.1))
            return True
