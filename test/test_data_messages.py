"""Message <-> numpy conversions shared by bags and nodes: the one CameraInfo reader (round trip,
every check), quaternions, images. Moved here from test_stereo.py with the reader."""
import numpy as np
import pytest

from sdpr_loc.data.errors import ImageSizeMismatchError, MalformedMessageError, UnsupportedEncodingError
from sdpr_loc.data.messages import (camera_from_infos, camera_info_fields, decode_image, encode_image, pose_fields,
                                   pose_to_matrix, quantize)
from sdpr_loc.geometry.stereo import StereoCamera

FX, B = 400.0, 0.24


@pytest.fixture
def cam():
    return StereoCamera(FX, 410.0, 320.0, 240.0, B, width=640, height=480)


def test_camera_info_roundtrip(cam):
    left, right = camera_info_fields(cam)
    assert right["p"][3] == pytest.approx(-FX * B)
    assert left["d"] == [0.0] * 5 and left["distortion_model"] == "plumb_bob"
    assert left["r"] == [1.0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert camera_from_infos(left, right) == cam
    # message-like objects with numpy fields (as rclpy / rosbags deliver them)
    msgs = [type("CameraInfo", (), {k: (np.asarray(v) if isinstance(v, list) else v)
                                     for k, v in d.items()})() for d in (left, right)]
    assert camera_from_infos(*msgs) == cam
    # unknown size (0 in CameraInfo) maps to None and back
    small = StereoCamera(FX, FX, 10.0, 20.0, B)
    assert camera_from_infos(*camera_info_fields(small)) == small


@pytest.mark.parametrize("edit, msg", [
    (lambda l, r: r["p"].__setitem__(3, 0.0), "baseline"),
    (lambda l, r: r["p"].__setitem__(3, +FX * B), "swapped"),
    (lambda l, r: l["p"].__setitem__(0, 0.0), "focal"),
    (lambda l, r: l["p"].__setitem__(6, float("nan")), "NaN"),
    (lambda l, r: r["p"].__setitem__(2, 300.0), "cx"),
    (lambda l, r: r.__setitem__("p", r["p"][:9]), "12 values"),
    (lambda l, r: l.pop("p"), "no field 'p'"),
])
def test_camera_info_errors(cam, edit, msg):
    left, right = camera_info_fields(cam)
    edit(left, right)
    with pytest.raises(ValueError, match=msg):
        camera_from_infos(left, right)


def test_camera_info_checks_of_both_former_readers(cam):
    """The checks the bag reader had that the node's did not, and the other way round."""
    left, right = camera_info_fields(cam)
    left["p"], right["p"] = [0.0] * 12, [0.0] * 12
    with pytest.raises(MalformedMessageError, match="all-zero"):
        camera_from_infos(left, right)
    left, right = camera_info_fields(cam)
    right["width"] = 320
    with pytest.raises(ImageSizeMismatchError, match="640x480, right is 320x480"):
        camera_from_infos(left, right)
    left, right = camera_info_fields(cam)
    left.pop("k")
    with pytest.raises(MalformedMessageError, match="no field 'k'"):
        camera_from_infos(left, right)


def test_pose_round_trip_and_bad_quaternion():
    from types import SimpleNamespace as NS

    from sdpr_loc.geometry.se3 import random_rotation

    T = np.eye(4)
    T[:3, :3] = random_rotation(generator=__import__("torch").Generator().manual_seed(3)).numpy()
    T[:3, 3] = (1.0, -2.0, 3.5)
    p, q = pose_fields(T)
    assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
    msg = NS(position=NS(x=p[0], y=p[1], z=p[2]), orientation=NS(x=q[0], y=q[1], z=q[2], w=q[3]))
    np.testing.assert_allclose(pose_to_matrix(msg), T, atol=1e-12)
    msg.orientation = NS(x=0.0, y=0.0, z=0.0, w=0.0)
    with pytest.raises(MalformedMessageError, match="quaternion"):
        pose_to_matrix(msg)


def test_image_codec_one_rounding_rule():
    """Float gray rounds to nearest, ties to even (127.5 -> 128, 0.5 -> 0), in every encoding."""
    img = np.array([[0.0, 0.5 / 255, 127.5 / 255, 1.0]], np.float64)
    np.testing.assert_array_equal(quantize(img, "mono8"), [[0, 0, 128, 255]])
    np.testing.assert_array_equal(quantize(img, "bgr8")[..., 1], [[0, 0, 128, 255]])
    fields = encode_image(img, "mono16")
    assert fields["step"] == 8 and fields["data"].dtype == np.uint8
    np.testing.assert_allclose(decode_image(type("Image", (), fields)), img, atol=0.5 / 65535)
    color = np.zeros((2, 3, 3), np.uint8)
    assert quantize(color, "rgb8") is color                    # a colour image goes out as it is
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quantize(img + 0.5, "mono8")
    with pytest.raises(UnsupportedEncodingError, match="yuv422"):
        encode_image(img, "yuv422")
