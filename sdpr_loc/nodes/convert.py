"""rclpy messages from numpy: headers, images, camera infos, poses, diagnostics.

The field values come from :mod:`sdpr_loc.data.messages` (shared with the bag reader and writer);
this module only wraps them in rclpy message classes, imported inside the functions. Reading
messages (stamps, poses, images, camera infos) is :mod:`sdpr_loc.data.messages`'s alone.
ROS 2 cv_bridge is not installable from pip (and PyPI's ``cv-bridge`` is the ROS 1 code).
"""
from __future__ import annotations

import array
from typing import Any, Mapping

import numpy as np

from sdpr_loc.data.messages import camera_info_fields, encode_image, ns_to_sec_nanosec, pose_fields, quantize
from sdpr_loc.geometry.stereo import StereoCamera

__all__ = ["ns_to_stamp", "header", "image_to_msg", "camera_info_msgs", "pose_to_msg", "diagnostic",
           "debug_image", "LEVELS"]


def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time

    sec, nanosec = ns_to_sec_nanosec(ns)
    return Time(sec=sec, nanosec=nanosec)


def header(ns: int, frame_id: str):
    from std_msgs.msg import Header

    return Header(stamp=ns_to_stamp(ns), frame_id=frame_id)


def image_to_msg(img: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "mono8"):
    """sensor_msgs/Image of an image as :func:`sdpr_loc.data.messages.encode_image` takes it:
    (H, W) gray float [0, 1], uint8 or uint16, or (H, W, 3) uint8 for rgb8/bgr8."""
    from sensor_msgs.msg import Image

    fields = encode_image(img, encoding)
    data = fields.pop("data")
    msg = Image(header=header(stamp_ns, frame_id), **fields)
    buf = array.array("B")
    buf.frombytes(data)          # one copy (array.array is the setter's fast path)
    msg.data = buf
    return msg


def camera_info_msgs(camera: StereoCamera, stamp_ns: int,
                     frame_ids: tuple[str, str] = ("stereo_left_optical_frame",
                                                   "stereo_right_optical_frame")):
    """(left, right) sensor_msgs/CameraInfo of a rectified pair (right P[0,3] = -fx * baseline)."""
    from sensor_msgs.msg import CameraInfo

    out = []
    for info, fid in zip(camera_info_fields(camera), frame_ids):
        m = CameraInfo(header=header(stamp_ns, fid), width=int(info["width"]), height=int(info["height"]),
                       distortion_model=info["distortion_model"])
        m.d = [float(x) for x in info["d"]]
        m.k = np.asarray(info["k"], dtype=np.float64)
        m.r = np.asarray(info["r"], dtype=np.float64)
        m.p = np.asarray(info["p"], dtype=np.float64)
        out.append(m)
    return out[0], out[1]


def pose_to_msg(T: np.ndarray):
    """geometry_msgs/Pose of a (4, 4) transform."""
    from geometry_msgs.msg import Point, Pose, Quaternion

    (x, y, z), q = pose_fields(T)
    return Pose(position=Point(x=float(x), y=float(y), z=float(z)),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def diagnostic(level: int, name: str, message: str, values: Mapping[str, Any], hardware_id: str = ""):
    """diagnostic_msgs/DiagnosticStatus; values are formatted as strings (floats with %.6g)."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    return DiagnosticStatus(level=bytes([int(level)]), name=name, message=message[:1000],
                            hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=fmt(v)) for k, v in values.items()])


def debug_image(left: np.ndarray, kp, stamp_ns: int, frame_id: str):
    """bgr8 image of the left frame with valid keypoints (green, radius ~ score) and rejected
    ones (red)."""
    import cv2

    img = quantize(left, "bgr8").copy()
    uv = kp.uv[0].detach().cpu().numpy()
    valid = kp.valid[0].cpu().numpy()
    scores = kp.scores[0].detach().cpu().numpy()
    for (u, v), ok, s in zip(uv, valid, scores):
        if not np.isfinite([u, v]).all():
            continue
        c = (int(round(u)), int(round(v)))
        cv2.circle(img, c, 2 + int(3 * s) if ok else 2, (0, 200, 0) if ok else (0, 0, 220), 1)
    return image_to_msg(img, stamp_ns, frame_id, encoding="bgr8")
