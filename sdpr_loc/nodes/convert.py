"""numpy <-> standard ROS messages: stamps, images, camera infos, poses, diagnostics.

ROS 2 cv_bridge is not installable from pip (and PyPI's ``cv-bridge`` is the ROS 1 code), so
images are filled field by field here. Message packages are imported inside the functions.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from sdpr_loc.geometry.stereo import StereoCamera

__all__ = ["stamp_to_ns", "ns_to_stamp", "image_to_msg", "camera_info_msgs", "pose_to_msg",
           "msg_to_matrix", "diagnostic", "debug_image", "LEVELS"]


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time

    sec, nsec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nsec)


def header(ns: int, frame_id: str):
    from std_msgs.msg import Header

    return Header(stamp=ns_to_stamp(ns), frame_id=frame_id)


def image_to_msg(img: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "mono8"):
    """sensor_msgs/Image of a gray (H, W) float [0, 1] / uint8 image, or (H, W, 3) uint8 for
    rgb8/bgr8."""
    from sensor_msgs.msg import Image

    img = np.asarray(img)
    if img.dtype.kind == "f":
        img = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if encoding in ("rgb8", "bgr8") and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if encoding == "mono16" and img.dtype == np.uint8:
        img = img.astype(np.uint16) * 257
    img = np.ascontiguousarray(img)
    msg = Image(header=header(stamp_ns, frame_id), height=int(img.shape[0]), width=int(img.shape[1]),
                encoding=encoding, is_bigendian=0, step=int(img.strides[0]))
    msg.data = img.tobytes()
    return msg


def camera_info_msgs(camera: StereoCamera, stamp_ns: int,
                     frame_ids: tuple[str, str] = ("stereo_left_optical_frame",
                                                   "stereo_right_optical_frame")):
    """(left, right) sensor_msgs/CameraInfo of a rectified pair (right P[0,3] = -fx * baseline)."""
    from sensor_msgs.msg import CameraInfo

    out = []
    for info, fid in zip(camera.to_camera_info_dicts(), frame_ids):
        m = CameraInfo(header=header(stamp_ns, fid), width=int(info["width"]), height=int(info["height"]),
                       distortion_model=info["distortion_model"])
        m.d = [float(x) for x in info["d"]]
        m.k = np.asarray(info["k"], dtype=np.float64)
        m.r = np.asarray(info["r"], dtype=np.float64)
        m.p = np.asarray(info["p"], dtype=np.float64)
        out.append(m)
    return out[0], out[1]


def _quat(R: np.ndarray) -> np.ndarray:
    import torch

    from sdpr_loc.geometry.se3 import quaternion_from_R

    return quaternion_from_R(torch.as_tensor(np.asarray(R, dtype=np.float64))).numpy()


def pose_to_msg(T: np.ndarray):
    """geometry_msgs/Pose of a (4, 4) transform."""
    from geometry_msgs.msg import Point, Pose, Quaternion

    q = _quat(T[:3, :3])
    return Pose(position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def msg_to_matrix(pose) -> np.ndarray:
    """(4, 4) transform of a geometry_msgs/Pose."""
    import torch

    from sdpr_loc.geometry.se3 import R_from_quaternion

    o, p = pose.orientation, pose.position
    T = np.eye(4)
    T[:3, :3] = R_from_quaternion(torch.tensor([o.x, o.y, o.z, o.w], dtype=torch.float64)).numpy()
    T[:3, 3] = (p.x, p.y, p.z)
    return T


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

    g = np.clip(np.asarray(left) * 255.0 + 0.5, 0, 255).astype(np.uint8) if np.asarray(left).dtype.kind == "f" \
        else np.asarray(left, dtype=np.uint8)
    img = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    uv = kp.uv[0].detach().cpu().numpy()
    valid = kp.valid[0].cpu().numpy()
    scores = kp.scores[0].detach().cpu().numpy()
    for (u, v), ok, s in zip(uv, valid, scores):
        if not np.isfinite([u, v]).all():
            continue
        c = (int(round(u)), int(round(v)))
        cv2.circle(img, c, 2 + int(3 * s) if ok else 2, (0, 200, 0) if ok else (0, 0, 220), 1)
    return image_to_msg(img, stamp_ns, frame_id, encoding="bgr8")
