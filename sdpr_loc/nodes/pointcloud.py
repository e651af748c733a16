"""Stereo keypoints <-> sensor_msgs/PointCloud2 (standard type, so rviz and rosbag read it).

One point per VALID keypoint (height 1, is_dense), little-endian float32 fields:

    x, y, z                 3D point in the left camera optical frame (m)
    u, v, disparity         left pixel and sub-pixel disparity (px)
    score                   detector confidence in [0, 1]
    icov_xx icov_xy icov_xz icov_yy icov_yz icov_zz
                            upper triangle of the 3x3 INVERSE covariance (1/m^2): registration
                            weights them directly, and the information matrix of a far point is
                            better conditioned in float32 than its covariance
    descriptor (count D)    unit-norm descriptor

The packing is pure numpy (:func:`pack` / :func:`unpack`); :func:`to_msg` / :func:`from_msg` wrap
it in the rclpy message. :func:`from_msg` reads any field order, offsets, float32/float64 types
and endianness, and rejects clouds that lack a field or contradict their own layout.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from sdpr_loc.vision.keypoints import StereoKeypoints

__all__ = ["SCALAR_FIELDS", "ICOV_FIELDS", "keypoint_dtype", "pack", "unpack", "dtype_from_fields",
           "to_msg", "from_msg", "PointCloudError"]

ICOV_FIELDS = ("icov_xx", "icov_xy", "icov_xz", "icov_yy", "icov_yz", "icov_zz")
SCALAR_FIELDS = ("x", "y", "z", "u", "v", "disparity", "score") + ICOV_FIELDS
_UPPER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
# sensor_msgs/PointField datatypes -> numpy type codes
_PF_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
FLOAT32 = 7


class PointCloudError(ValueError):
    """A PointCloud2 that is not a keypoint cloud (missing fields, truncated data, bad values)."""


def keypoint_dtype(D: int) -> np.dtype:
    """Packed little-endian record of one keypoint with a descriptor of length ``D``."""
    spec = [(name, "<f4") for name in SCALAR_FIELDS]
    if D > 0:
        spec.append(("descriptor", "<f4", (D,)))
    return np.dtype(spec)


def pack(kp: StereoKeypoints, b: int = 0) -> np.ndarray:
    """Frame ``b``'s valid keypoints as a structured array (N,) of :func:`keypoint_dtype`."""
    valid = kp.valid[b].detach().cpu().numpy().astype(bool)
    D = int(kp.descriptors.shape[-1])
    out = np.zeros(int(valid.sum()), dtype=keypoint_dtype(D))
    pts = kp.points[b].detach().cpu().numpy()[valid]
    uv = kp.uv[b].detach().cpu().numpy()[valid]
    W = kp.inv_cov[b].detach().cpu().numpy()[valid]
    for i, name in enumerate("xyz"):
        out[name] = pts[:, i]
    out["u"], out["v"] = uv[:, 0], uv[:, 1]
    out["disparity"] = kp.disparity[b].detach().cpu().numpy()[valid]
    out["score"] = kp.scores[b].detach().cpu().numpy()[valid]
    for name, (i, j) in zip(ICOV_FIELDS, _UPPER):
        out[name] = 0.5 * (W[:, i, j] + W[:, j, i])
    if D > 0:
        out["descriptor"] = kp.descriptors[b].detach().cpu().numpy()[valid]
    return out


def unpack(arr: np.ndarray, dtype: torch.dtype = torch.float32) -> StereoKeypoints:
    """Structured array (with the fields of :func:`keypoint_dtype`) -> StereoKeypoints (B = 1).

    Rows with non-finite values are marked invalid (never handed to registration).
    """
    names = arr.dtype.names or ()
    missing = [n for n in SCALAR_FIELDS if n not in names]
    if missing:
        raise PointCloudError(f"keypoint cloud lacks fields {missing} (has {list(names)})")
    N = arr.shape[0]
    col = lambda n: np.asarray(arr[n], dtype=np.float64).reshape(N)  # noqa: E731
    pts = np.stack([col("x"), col("y"), col("z")], 1)
    W = np.zeros((N, 3, 3))
    for name, (i, j) in zip(ICOV_FIELDS, _UPPER):
        W[:, i, j] = W[:, j, i] = col(name)
    D = int(np.prod(arr.dtype["descriptor"].shape) or 1) if "descriptor" in names else 0
    desc = np.asarray(arr["descriptor"], dtype=np.float64).reshape(N, D) if D else np.zeros((N, 0))
    uv = np.stack([col("u"), col("v")], 1)
    disp, score = col("disparity"), col("score")
    finite = (np.isfinite(pts).all(1) & np.isfinite(W).reshape(N, 9).all(1)
              & np.isfinite(desc).all(1) & np.isfinite(uv).all(1) & np.isfinite(disp) & np.isfinite(score))
    clean = lambda a: np.where(np.isfinite(a), a, 0.0)  # noqa: E731
    t = lambda a: torch.from_numpy(clean(a)).to(dtype)[None]  # noqa: E731
    return StereoKeypoints(uv=t(uv), disparity=t(disp), points=t(pts), inv_cov=t(W),
                           scores=t(np.clip(clean(score), 0.0, 1.0)), descriptors=t(desc),
                           valid=torch.from_numpy(finite)[None])


def dtype_from_fields(fields: Sequence[Any], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """numpy dtype of one point from PointField-like objects (name, offset, datatype, count)."""
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        code = _PF_TYPES.get(int(f.datatype))
        if code is None:
            raise PointCloudError(f"field {f.name!r} has unknown PointField datatype {f.datatype}")
        count = max(1, int(f.count))
        fmt = np.dtype((order + code, (count,))) if count > 1 or f.name == "descriptor" else np.dtype(order + code)
        if int(f.offset) + fmt.itemsize > point_step:
            raise PointCloudError(f"field {f.name!r} (offset {f.offset}, {fmt.itemsize} bytes) runs past "
                                  f"point_step {point_step}")
        names.append(str(f.name))
        formats.append(fmt)
        offsets.append(int(f.offset))
    if len(set(names)) != len(names):
        raise PointCloudError(f"duplicate field names in {names}")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})


# ------------------------------------------------------------------------------------------------
# rclpy messages (sensor_msgs is imported lazily: this module stays importable without ROS)
# ------------------------------------------------------------------------------------------------
def to_msg(kp: StereoKeypoints, header: Any, b: int = 0):
    """sensor_msgs/PointCloud2 of frame ``b``'s valid keypoints with ``header``."""
    from sensor_msgs.msg import PointCloud2, PointField

    arr = pack(kp, b)
    dt = arr.dtype
    fields = []
    for name in dt.names:
        sub, offset = dt.fields[name][:2]
        count = int(np.prod(sub.shape)) if sub.shape else 1
        fields.append(PointField(name=name, offset=int(offset), datatype=FLOAT32, count=count))
    msg = PointCloud2(header=header, height=1, width=int(arr.shape[0]), fields=fields,
                      is_bigendian=False, point_step=int(dt.itemsize),
                      row_step=int(dt.itemsize * arr.shape[0]), is_dense=True)
    msg.data = arr.tobytes()
    return msg


def from_msg(msg: Any, dtype: torch.dtype = torch.float32) -> StereoKeypoints:
    """sensor_msgs/PointCloud2 -> StereoKeypoints (B = 1); PointCloudError if it is not one."""
    n = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    if n == 0:
        D = next((max(1, int(f.count)) for f in msg.fields if f.name == "descriptor"), 0)
        return unpack(np.zeros(0, dtype=keypoint_dtype(D)), dtype)
    if step <= 0:
        raise PointCloudError(f"point_step must be positive, got {step}")
    dt = dtype_from_fields(msg.fields, step, bool(msg.is_bigendian))
    row = int(msg.row_step) if int(msg.row_step) else step * int(msg.width)
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if row < step * int(msg.width) or data.size < row * int(msg.height):
        raise PointCloudError(f"cloud data has {data.size} bytes, {msg.width}x{msg.height} points of "
                              f"{step} bytes (row_step {msg.row_step}) need {row * int(msg.height)}")
    rows = data[: row * int(msg.height)].reshape(int(msg.height), row)[:, : step * int(msg.width)]
    arr = np.frombuffer(np.ascontiguousarray(rows).tobytes(), dtype=dt, count=n)
    return unpack(arr, dtype)
