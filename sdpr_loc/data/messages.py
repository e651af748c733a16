"""Standard ROS messages <-> numpy, for bags and nodes alike: stamps, poses, CameraInfo, images.

Readers take any object with the message's fields (rosbags dataclasses and rclpy messages alike;
CameraInfo also as a dict), so :mod:`.bags` and the nodes share them. Writers return plain field
values that each side wraps in its own message classes (``bags``: the rosbags typestore;
``nodes/convert``: rclpy). Pure numpy: no ROS import here. One CameraInfo reader with one set of
checks, one image codec with one rounding rule (nearest, ties to even), one quaternion
convention ((x, y, z, w) through :mod:`sdpr_loc.geometry.se3`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from sdpr_loc.geometry.se3 import R_from_quaternion_np, quaternion_from_R_np
from sdpr_loc.geometry.stereo import StereoCamera

from .errors import ImageSizeMismatchError, MalformedMessageError, UnsupportedEncodingError

__all__ = ["SUPPORTED_ENCODINGS", "stamp_to_ns", "ns_to_sec_nanosec", "pose_to_matrix", "pose_fields",
           "camera_from_infos", "camera_info_fields", "check_encoding", "quantize", "encode_image", "decode_image"]

SUPPORTED_ENCODINGS = ("mono8", "mono16", "rgb8", "bgr8")
RECTIFIED_RTOL = 1e-6   # left and right P must agree on fx, fy, cx, cy this closely


# --------------------------------------------------------------------------------------------
# stamps and poses
# --------------------------------------------------------------------------------------------
def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> nanoseconds since the epoch."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """Nanoseconds -> the (sec, nanosec) fields of a builtin_interfaces/Time."""
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return sec, nsec


def pose_to_matrix(pose) -> np.ndarray:
    """geometry_msgs/Pose -> (4, 4) float64 transform; MalformedMessageError for a zero or
    non-finite quaternion."""
    o, p = pose.orientation, pose.position
    q = np.array([o.x, o.y, o.z, o.w], dtype=np.float64)
    n = float(q @ q)
    if not np.isfinite(n) or n < 1e-12:
        raise MalformedMessageError(f"pose orientation {tuple(q)} is not a valid quaternion")
    T = np.eye(4)
    T[:3, :3] = R_from_quaternion_np(q)
    T[:3, 3] = (p.x, p.y, p.z)
    return T


def pose_fields(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) transform -> (position (3,), orientation (x, y, z, w) with w >= 0) of a Pose."""
    T = np.asarray(T, dtype=np.float64)
    return T[:3, 3].copy(), quaternion_from_R_np(T[:3, :3])


# --------------------------------------------------------------------------------------------
# CameraInfo
# --------------------------------------------------------------------------------------------
def _info_field(info: Any, name: str, side: str) -> Any:
    """Field ``name`` of a CameraInfo message, or of a dict (``p`` or ``P`` keys)."""
    if isinstance(info, Mapping):
        for key in (name, name.upper()):
            if key in info:
                return info[key]
    elif hasattr(info, name):
        return getattr(info, name)
    raise MalformedMessageError(f"{side} camera info has no field '{name}'")


def _info_array(info: Any, name: str, size: int, side: str) -> np.ndarray:
    arr = np.asarray(_info_field(info, name, side), dtype=np.float64).reshape(-1)
    if arr.size != size:
        raise MalformedMessageError(f"{side} camera info field '{name}' must have {size} values, got {arr.size}")
    if not np.isfinite(arr).all():
        raise MalformedMessageError(f"{side} camera info field '{name}' contains NaN or inf")
    return arr


def _info_size(info: Any) -> tuple[int | None, int | None]:
    """(width, height); None where absent or 0 (unknown in CameraInfo)."""
    get = info.get if isinstance(info, Mapping) else lambda k: getattr(info, k, None)
    return tuple(int(v) if v else None for v in (get("width"), get("height")))


def camera_from_infos(left, right) -> StereoCamera:
    """The rectified stereo model of a left and right sensor_msgs/CameraInfo (messages or dicts).

    Intrinsics come from the projection matrices ``p`` (those of the rectified images; ``k``
    describes the raw camera and is only checked). Baseline ``B = -(P_right[0,3] - P_left[0,3]) /
    fx`` (ROS: ``P_right[0,3] = -fx B``). Raises MalformedMessageError (a field missing, of the
    wrong length or not finite; P all zero; a non-positive focal length; left and right P not a
    rectified pair; a non-positive baseline) or ImageSizeMismatchError (left and right sizes
    differ); both are ValueErrors.
    """
    pl, pr = _info_array(left, "p", 12, "left"), _info_array(right, "p", 12, "right")
    _info_array(left, "k", 9, "left")
    fx, cx, fy, cy = pl[0], pl[2], pl[5], pl[6]
    if fx == 0.0 and fy == 0.0:
        raise MalformedMessageError("left camera info has an all-zero projection matrix P; rectified "
                                    "stereo needs P (baseline from right P[0,3])")
    if fx <= 0 or fy <= 0:
        raise MalformedMessageError(f"left camera info P has a non-positive focal length (fx={fx}, "
                                    f"fy={fy}); is the camera calibrated?")
    for name, a, b in (("fx", fx, pr[0]), ("fy", fy, pr[5]), ("cx", cx, pr[2]), ("cy", cy, pr[6])):
        if abs(a - b) > RECTIFIED_RTOL * max(abs(a), abs(b), 1.0):
            raise MalformedMessageError(f"left and right camera info disagree on {name} ({a} vs {b}); "
                                        f"expected a rectified pair")
    baseline = -(pr[3] - pl[3]) / pr[0]
    if not baseline > 0:
        raise MalformedMessageError(f"baseline from right P[0,3] must be positive, got {baseline} "
                                    f"(P_right[0,3] = {pr[3]}, expected -fx * B); are left and right swapped?")
    (wl, hl), (wr, hr) = _info_size(left), _info_size(right)
    if None not in (wl, hl, wr, hr) and (wl, hl) != (wr, hr):
        raise ImageSizeMismatchError(f"left camera info is {wl}x{hl}, right is {wr}x{hr}")
    return StereoCamera(fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy), baseline=float(baseline),
                        width=wl, height=hl)


def camera_info_fields(camera: StereoCamera) -> tuple[dict, dict]:
    """(left, right) CameraInfo fields of a rectified pair: width, height (0 when unknown),
    distortion_model, d, k, r, p as lists; right ``P[0,3] = -fx * baseline``."""
    k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0]
    r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]

    def info(tx: float) -> dict:
        return {"width": camera.width or 0, "height": camera.height or 0, "distortion_model": "plumb_bob",
                "d": [0.0] * 5, "k": list(k), "r": list(r),
                "p": [camera.fx, 0.0, camera.cx, tx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0]}

    return info(0.0), info(-camera.fx * camera.baseline)


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
def check_encoding(encoding: str, verb: str) -> None:
    """UnsupportedEncodingError unless ``encoding`` is one this package reads and writes."""
    if encoding not in SUPPORTED_ENCODINGS:
        raise UnsupportedEncodingError(f"cannot {verb} encoding {encoding!r}; supported: "
                                       f"{', '.join(SUPPORTED_ENCODINGS)}")


def quantize(img: np.ndarray, encoding: str) -> np.ndarray:
    """Pixels of ``encoding``: (H, W) uint16 for mono16, (H, W) uint8 for mono8, (H, W, 3) uint8
    for rgb8/bgr8 (gray repeated). ``img``: (H, W) gray as float in [0, 1] (rounded to nearest,
    ties to even), uint8 or uint16; or (H, W, 3) uint8 for rgb8/bgr8 (taken as is)."""
    img = np.asarray(img)
    check_encoding(encoding, "write")
    color = encoding in ("rgb8", "bgr8")
    if img.ndim == 3 and color and img.shape[2] == 3 and img.dtype == np.uint8:
        return img
    if img.ndim != 2:
        raise ValueError(f"cannot write a {img.shape} {img.dtype} image as {encoding}; expected (H, W) gray")
    if img.dtype.kind == "f":
        if img.size and (np.nanmin(img) < 0.0 or np.nanmax(img) > 1.0):
            raise ValueError("float images must lie in [0, 1]")
        scale = 65535.0 if encoding == "mono16" else 255.0
        img = np.rint(img * scale).astype(np.uint16 if encoding == "mono16" else np.uint8)
    elif img.dtype == np.uint8 and encoding == "mono16":
        img = img.astype(np.uint16) * 257  # 255 -> 65535: same gray after normalisation
    elif img.dtype == np.uint16 and encoding != "mono16":
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"unsupported image dtype {img.dtype}; use float [0,1], uint8 or uint16")
    return np.repeat(img[:, :, None], 3, axis=2) if color else img


def encode_image(img: np.ndarray, encoding: str = "mono8") -> dict:
    """sensor_msgs/Image fields (all but the header) of an image (see :func:`quantize`):
    height, width, encoding, is_bigendian (0), step, data (flat uint8 array, rows unpadded)."""
    q = quantize(img, encoding)
    q = np.ascontiguousarray(q, dtype=q.dtype.newbyteorder("<"))
    h, w = q.shape[:2]
    return {"height": int(h), "width": int(w), "encoding": encoding, "is_bigendian": 0,
            "step": int(q.nbytes // h) if h else 0, "data": q.reshape(-1).view(np.uint8)}


def decode_image(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) float32 gray in [0, 1]; honours ``step`` and endianness.

    Data as numpy (rosbags), array.array or bytes (rclpy). rosbags.image assumes rows without
    padding, so the decoding is done here. UnsupportedEncodingError or MalformedMessageError.
    """
    import cv2

    enc = str(msg.encoding).lower()
    if enc not in SUPPORTED_ENCODINGS:
        raise UnsupportedEncodingError(
            f"image encoding {msg.encoding!r} is not supported; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    chans, itemsize = (1, 2) if enc == "mono16" else ((3, 1) if enc in ("rgb8", "bgr8") else (1, 1))
    row = w * chans * itemsize
    raw = msg.data
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = np.frombuffer(raw, dtype=np.uint8)
    else:  # numpy (rosbags) or array.array('B') (rclpy)
        data = np.asarray(raw, dtype=np.uint8).reshape(-1)
    if h == 0 or w == 0:
        raise MalformedMessageError(f"image has zero size ({w}x{h})")
    if step < row:
        raise MalformedMessageError(f"image step {step} < width*bytes_per_pixel {row} ({enc}, {w}x{h})")
    if data.size < step * (h - 1) + row:
        raise MalformedMessageError(f"image data has {data.size} bytes, a {w}x{h} {enc} image needs {step * h}")
    dtype = np.dtype("<u2" if not msg.is_bigendian else ">u2") if itemsize == 2 else np.dtype(np.uint8)
    arr = np.ndarray(shape=(h, w * chans), dtype=dtype, buffer=data.data, strides=(step, itemsize))
    if enc == "mono16":
        return arr.astype(np.float32) / np.float32(65535.0)
    if enc == "mono8":
        return arr.astype(np.float32) / np.float32(255.0)
    rgb = np.ascontiguousarray(arr).reshape(h, w, 3)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY if enc == "rgb8" else cv2.COLOR_BGR2GRAY)
    return gray.astype(np.float32) / np.float32(255.0)
