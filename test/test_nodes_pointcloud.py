"""Keypoints <-> PointCloud2: exact round trip, foreign layouts, malformed clouds."""
import numpy as np
import pytest
import torch

from sdpr_loc.nodes.pointcloud import (ICOV_FIELDS, SCALAR_FIELDS, PointCloudError, dtype_from_fields,
                                       keypoint_dtype, pack, unpack)
from sdpr_loc.vision.keypoints import StereoKeypoints


def _keypoints(K=7, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, 3, 3, generator=g)
    valid = torch.ones(K, dtype=torch.bool)
    valid[1] = False
    return StereoKeypoints(uv=torch.rand(1, K, 2, generator=g) * 100, disparity=torch.rand(1, K, generator=g) * 9,
                           points=torch.randn(1, K, 3, generator=g), inv_cov=(A @ A.transpose(1, 2))[None],
                           scores=torch.rand(1, K, generator=g),
                           descriptors=torch.nn.functional.normalize(torch.randn(1, K, D, generator=g), dim=-1),
                           valid=valid[None])


def test_pack_unpack_roundtrip_keeps_valid_points():
    kp = _keypoints()
    arr = pack(kp)
    assert arr.dtype == keypoint_dtype(5) and arr.shape == (6,)
    back = unpack(arr)
    v = kp.valid[0]
    for name in ("uv", "disparity", "points", "inv_cov", "scores", "descriptors"):
        assert torch.allclose(getattr(back, name)[0], getattr(kp, name)[0][v], atol=1e-6), name
    assert bool(back.valid.all())


def test_nonfinite_rows_are_invalid():
    arr = pack(_keypoints())
    arr["z"][2] = np.nan
    arr["icov_yy"][3] = np.inf
    back = unpack(arr)
    assert back.valid[0].tolist() == [True, True, False, False, True, True]
    assert torch.isfinite(back.points).all() and torch.isfinite(back.inv_cov).all()


def test_foreign_layout_float64_bigendian_reordered():
    arr = pack(_keypoints(D=3))

    class F:  # PointField stand-in
        def __init__(self, name, offset, datatype, count=1):
            self.name, self.offset, self.datatype, self.count = name, offset, datatype, count

    names = list(reversed(SCALAR_FIELDS))
    fields, off = [], 0
    for n in names:
        fields.append(F(n, off, 8))                  # FLOAT64
        off += 8
    fields.append(F("descriptor", off, 7, 3))
    off += 12
    dt = dtype_from_fields(fields, off + 4, is_bigendian=True)   # 4 bytes of padding per point
    other = np.zeros(arr.shape[0], dtype=dt)
    for n in SCALAR_FIELDS:
        other[n] = arr[n]
    other["descriptor"] = arr["descriptor"]
    back = unpack(np.frombuffer(other.tobytes(), dtype=dt))
    assert torch.allclose(back.points[0], unpack(arr).points[0])
    assert torch.allclose(back.descriptors[0], unpack(arr).descriptors[0])


def test_bad_layouts_raise():
    class F:
        def __init__(self, name, offset, datatype, count=1):
            self.name, self.offset, self.datatype, self.count = name, offset, datatype, count

    with pytest.raises(PointCloudError, match="datatype"):
        dtype_from_fields([F("x", 0, 99)], 4)
    with pytest.raises(PointCloudError, match="past"):
        dtype_from_fields([F("x", 2, 7)], 4)
    with pytest.raises(PointCloudError, match="lacks"):
        unpack(np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")]))


@pytest.mark.ros
def test_message_roundtrip_and_truncation():
    from std_msgs.msg import Header

    from sdpr_loc.nodes.pointcloud import from_msg, to_msg

    kp = _keypoints(K=9, D=4)
    msg = to_msg(kp, Header(frame_id="cam"))
    assert msg.width == 8 and msg.height == 1 and msg.is_dense
    assert [f.name for f in msg.fields][:3] == ["x", "y", "z"]
    assert {f.name for f in msg.fields} >= set(ICOV_FIELDS) | {"u", "v", "score", "descriptor"}
    back = from_msg(msg)
    assert torch.allclose(back.points[0], kp.points[0][kp.valid[0]])
    msg.data = bytes(msg.data)[:-3]
    with pytest.raises(PointCloudError, match="bytes"):
        from_msg(msg)
    z = torch.zeros
    none = StereoKeypoints(uv=z(1, 0, 2), disparity=z(1, 0), points=z(1, 0, 3), inv_cov=z(1, 0, 3, 3),
                           scores=z(1, 0), descriptors=z(1, 0, 4), valid=z(1, 0, dtype=torch.bool))
    empty = to_msg(none, Header())
    e = from_msg(empty)
    assert e.points.shape == (1, 0, 3) and e.descriptors.shape == (1, 0, 4)
