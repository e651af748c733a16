"""rosbag2 I/O: round trips in both storage formats, standard layout, hostile bags."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sdpr_loc.data.bags import StereoBag, StereoFrame, StereoTopics, camera_to_infos, matrix_to_pose, write_stereo_bag
from sdpr_loc.data.errors import (
    ImageSizeMismatchError, MalformedMessageError, MissingCameraInfoError, MissingTopicError, TopicTypeError,
    UnreadableBagError, UnsupportedEncodingError)
from sdpr_loc.geometry.stereo import StereoCamera

H, W = 24, 32
CAM = StereoCamera(fx=40.0, fy=41.0, cx=15.5, cy=11.5, baseline=0.24, width=W, height=H)
T0 = 1_700_000_000_000_000_000


def _rot(rng):
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def make_frames(n=6, seed=0, pose=True):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        T = np.eye(4)
        T[:3, :3] = _rot(rng)
        T[:3, 3] = rng.uniform(-50, 50, 3)
        left = rng.integers(0, 256, (H, W)).astype(np.float32) / 255
        right = rng.integers(0, 256, (H, W)).astype(np.float32) / 255
        out.append(StereoFrame(left, right, CAM, T0 + i * 100_000_000, T if pose else None))
    return out


@pytest.mark.parametrize("name,storage", [("bag.mcap", None), ("bag.db3", None),
                                          ("bagdir", "mcap"), ("bagdir", "sqlite3")])
def test_round_trip_both_storages(tmp_path, name, storage):
    frames = make_frames()
    path = tmp_path / name
    assert write_stereo_bag(path, iter(frames), storage=storage) == len(frames)
    if storage:
        suffix = ".mcap" if storage == "mcap" else ".db3"
        assert (path / "metadata.yaml").exists() and (path / f"bagdir{suffix}").exists()
    bag = StereoBag(path)
    assert len(bag) == len(frames)
    got = list(bag)
    assert len(got) == len(frames) and bag.dropped == 0
    for a, b in zip(frames, got):
        assert b.left.dtype == np.float32 and b.left.shape == (H, W)
        np.testing.assert_array_equal(a.left, b.left)
        np.testing.assert_array_equal(a.right, b.right)
        assert a.stamp_ns == b.stamp_ns
        np.testing.assert_allclose(b.pose, a.pose, atol=1e-12)
        c = b.camera
        assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (40.0, 41.0, 15.5, 11.5, W, H)
        assert c.baseline == pytest.approx(0.24, rel=1e-12)
    # random access through the index gives the same frames
    assert len(bag.index()) == len(frames)
    f3 = bag[3]
    np.testing.assert_array_equal(f3.right, frames[3].right)
    np.testing.assert_allclose(f3.pose, frames[3].pose, atol=1e-12)


@pytest.mark.parametrize("encoding", ["mono8", "mono16", "rgb8", "bgr8", ("mono16", "bgr8")])
def test_encodings_decode_to_the_same_gray(tmp_path, encoding):
    """8-bit gray levels survive every encoding exactly (gray -> 3 equal channels -> gray)."""
    frames = make_frames(3)
    write_stereo_bag(tmp_path / "e.mcap", frames, encoding=encoding)
    for a, b in zip(frames, StereoBag(tmp_path / "e.mcap")):
        np.testing.assert_array_equal(a.left, b.left)
        np.testing.assert_array_equal(a.right, b.right)


def test_frames_without_ground_truth_and_custom_topics(tmp_path):
    topics = {"left": "/cam/l", "right": "/cam/r", "left_info": "/cam/l/info",
              "right_info": "/cam/r/info", "pose": None}
    write_stereo_bag(tmp_path / "t.db3", make_frames(2), topics=topics)
    got = list(StereoBag(tmp_path / "t.db3", topics=topics))
    assert len(got) == 2 and all(f.pose is None for f in got)
    with pytest.raises(MissingTopicError):
        StereoBag(tmp_path / "t.db3")  # default topic names are not in this bag


def _installed_hash(msgtype: str) -> str | None:
    """Type hash from the ROS 2 interface description installed by the ROS wheels, if any."""
    f = Path(sys.prefix, "share", *msgtype.split("/")).with_suffix(".json")
    if not f.exists():
        return None
    for entry in json.loads(f.read_text())["type_hashes"]:
        if entry["type_name"] == msgtype:
            return entry["hash_string"]
    return None


@pytest.mark.parametrize("distro,store", [("kilted", "ROS2_KILTED"), ("jazzy", "ROS2_JAZZY")])
def test_opens_with_stock_anyreader(tmp_path, distro, store):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    frames = make_frames(3)
    path = tmp_path / "std"
    write_stereo_bag(path, frames, storage="sqlite3", distro=distro)
    ts = get_typestore(getattr(Stores, store))
    with AnyReader([path], default_typestore=ts) as reader:
        conns = {c.topic: c for c in reader.connections}
        t = StereoTopics()
        assert conns[t.left].msgtype == "sensor_msgs/msg/Image"
        assert conns[t.left_info].msgtype == "sensor_msgs/msg/CameraInfo"
        assert conns[t.pose].msgtype == "geometry_msgs/msg/PoseStamped"
        for c in conns.values():
            assert c.digest == ts.hash_rihs01(c.msgtype)
            if distro == "kilted" and (ref := _installed_hash(c.msgtype)):
                assert c.digest == ref
        images = [reader.deserialize(raw, c.msgtype)
                  for c, _, raw in reader.messages([conns[t.left]])]
        infos = [reader.deserialize(raw, c.msgtype)
                 for c, _, raw in reader.messages([conns[t.right_info]])]
    assert [m.encoding for m in images] == ["mono8"] * 3
    np.testing.assert_array_equal(images[1].data.reshape(H, W), np.rint(frames[1].left * 255))
    assert infos[0].p[3] == pytest.approx(-CAM.fx * CAM.baseline)
    assert infos[0].header.frame_id == "stereo_right_optical_frame"


# --------------------------------------------------------------------------------------------
# hand-made bags with rosbags' own writer (independent of write_stereo_bag)
# --------------------------------------------------------------------------------------------
def raw_bag(path, *, left=None, right=None, infos=True, info_type="sensor_msgs/msg/CameraInfo",
            poses=(), storage="mcap"):
    """left/right: lists of (stamp_ns, height, width, encoding, data bytes, step)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    G = ts.types
    t = StereoTopics()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3

    def header(s, fid):
        return G["std_msgs/msg/Header"](
            stamp=G["builtin_interfaces/msg/Time"](sec=s // 10**9, nanosec=s % 10**9), frame_id=fid)

    with Writer(path, version=9, storage_plugin=plugin) as w:
        cl = w.add_connection(t.left, "sensor_msgs/msg/Image", typestore=ts)
        cr = w.add_connection(t.right, "sensor_msgs/msg/Image", typestore=ts)
        if infos:
            cil = w.add_connection(t.left_info, info_type, typestore=ts)
            cir = w.add_connection(t.right_info, info_type, typestore=ts)
        cp = w.add_connection(t.pose, "geometry_msgs/msg/PoseStamped", typestore=ts) if poses else None
        msgs = []
        for conn, items in ((cl, left or []), (cr, right or [])):
            for s, h, wd, enc, data, step in items:
                m = G["sensor_msgs/msg/Image"](header=header(s, "f"), height=h, width=wd,
                                               encoding=enc, is_bigendian=0, step=step,
                                               data=np.frombuffer(data, np.uint8))
                msgs.append((s, conn, ts.serialize_cdr(m, "sensor_msgs/msg/Image")))
        if infos:
            stamps = sorted({s for s, *_ in (left or [])})
            for s in stamps:
                il, ir = camera_to_infos(ts, CAM, s, ("l", "r"))
                if info_type == "sensor_msgs/msg/CameraInfo":
                    msgs.append((s, cil, ts.serialize_cdr(il, info_type)))
                    msgs.append((s, cir, ts.serialize_cdr(ir, info_type)))
                else:
                    msg = G[info_type](data="not a camera info")
                    msgs.append((s, cil, ts.serialize_cdr(msg, info_type)))
                    msgs.append((s, cir, ts.serialize_cdr(msg, info_type)))
        for s, T in poses:
            m = G["geometry_msgs/msg/PoseStamped"](header=header(s, "world"),
                                                   pose=matrix_to_pose(ts, T))
            msgs.append((s, cp, ts.serialize_cdr(m, "geometry_msgs/msg/PoseStamped")))
        for s, conn, raw in sorted(msgs, key=lambda x: x[0]):
            w.write(conn, s, raw)


def mono8(s, h=H, w=W, value=7):
    return (s, h, w, "mono8", bytes([value]) * (h * w), w)


def test_pairing_by_stamp_within_tolerance(tmp_path):
    """Right stamps 1 ms late pair up; a left image without partner is skipped and counted."""
    lefts = [mono8(T0 + k * 10**8, value=k) for k in range(5)]
    rights = [mono8(T0 + k * 10**8 + 10**6, value=k) for k in (0, 1, 3, 4)]
    poses = [(T0 + k * 5 * 10**7 + 2 * 10**6, np.diag([1.0, 1, 1, 1]) + np.eye(4, k=3) * k)
             for k in range(10)]
    raw_bag(tmp_path / "p", left=lefts, right=rights, poses=poses)
    bag = StereoBag(tmp_path / "p", tolerance_ns=3 * 10**6)
    got = list(bag)
    assert [round(f.left[0, 0] * 255) for f in got] == [0, 1, 3, 4]
    assert [round(f.right[0, 0] * 255) for f in got] == [0, 1, 3, 4]
    assert bag.dropped == 1
    # the pose 2 ms after each frame is the nearest within the tolerance
    assert [f.pose[0, 3] for f in got] == [0.0, 2.0, 6.0, 8.0]
    assert list(StereoBag(tmp_path / "p", tolerance_ns=10**5)) == []  # nothing pairs at 0.1 ms


def test_truncated_files_raise_unreadable(tmp_path):
    frames = make_frames(8)
    for name in ("t.mcap", "t.db3"):
        path = tmp_path / name
        write_stereo_bag(path, frames)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(UnreadableBagError, match="truncated or corrupt"):
            list(StereoBag(path))
    d = tmp_path / "tdir"
    write_stereo_bag(d, frames)
    f = d / "tdir.mcap"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(UnreadableBagError):
        list(StereoBag(d))
    with pytest.raises(UnreadableBagError, match="does not exist"):
        StereoBag(tmp_path / "nope.mcap")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UnreadableBagError, match="metadata.yaml"):
        StereoBag(tmp_path / "plain")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(UnreadableBagError):
        StereoBag(tmp_path / "x.txt")


def test_missing_topic_lists_what_the_bag_has(tmp_path):
    raw_bag(tmp_path / "m", left=[mono8(T0)], right=[mono8(T0)])
    with pytest.raises(MissingTopicError) as err:
        StereoBag(tmp_path / "m", topics={"right": "/stereo/right/image_raw"})
    msg = str(err.value)
    assert "/stereo/right/image_raw" in msg
    assert "/stereo/left/image_rect [sensor_msgs/msg/Image]" in msg
    assert "/stereo/right/camera_info" in msg


def test_mono16_and_bgr8_sides_agree(tmp_path):
    """Different encodings per side are converted independently to the same gray scale."""
    g = np.arange(H * W, dtype=np.uint32).reshape(H, W) % 256
    m16 = (g * 257).astype("<u2").tobytes()
    bgr = np.repeat(g.astype(np.uint8)[..., None], 3, axis=2).tobytes()
    raw_bag(tmp_path / "e", left=[(T0, H, W, "mono16", m16, 2 * W)],
            right=[(T0, H, W, "bgr8", bgr, 3 * W)])
    (f,) = list(StereoBag(tmp_path / "e"))
    np.testing.assert_array_equal(f.left, f.right)
    np.testing.assert_allclose(f.left, g / 255.0, atol=1e-7)


def test_unsupported_encoding_is_named(tmp_path):
    raw_bag(tmp_path / "u", left=[(T0, H, W, "32FC1", bytes(4 * H * W), 4 * W)],
            right=[mono8(T0)])
    with pytest.raises(UnsupportedEncodingError, match="32FC1"):
        list(StereoBag(tmp_path / "u"))
    with pytest.raises(UnsupportedEncodingError, match="yuv422"):
        write_stereo_bag(tmp_path / "w.mcap", make_frames(1), encoding="yuv422")


def test_left_right_size_mismatch(tmp_path):
    raw_bag(tmp_path / "s", left=[mono8(T0)], right=[mono8(T0, h=H, w=W + 2)])
    with pytest.raises(ImageSizeMismatchError, match=f"{W}x{H}.*{W + 2}x{H}"):
        list(StereoBag(tmp_path / "s"))
    with pytest.raises(ImageSizeMismatchError):
        StereoBag(tmp_path / "s").index()
    with pytest.raises(ImageSizeMismatchError):
        StereoFrame(np.zeros((H, W), np.float32), np.zeros((H, W + 2), np.float32), CAM, 0)


def test_missing_camera_info(tmp_path):
    raw_bag(tmp_path / "c", left=[mono8(T0)], right=[mono8(T0)], infos=False)
    with pytest.raises(MissingCameraInfoError, match="camera_info"):
        StereoBag(tmp_path / "c")
    (f,) = list(StereoBag(tmp_path / "c", camera=CAM))  # the documented way around it
    assert f.camera == CAM
    raw_bag(tmp_path / "t", left=[mono8(T0)], right=[mono8(T0)], info_type="std_msgs/msg/String")
    with pytest.raises(TopicTypeError, match="std_msgs/msg/String"):
        StereoBag(tmp_path / "t")


def test_camera_info_size_and_malformed_image(tmp_path):
    raw_bag(tmp_path / "z", left=[mono8(T0, h=H + 1)], right=[mono8(T0, h=H + 1)])
    with pytest.raises(ImageSizeMismatchError, match="CameraInfo"):
        list(StereoBag(tmp_path / "z"))
    short = (T0, H, W, "mono8", bytes(H * W - 5), W)
    raw_bag(tmp_path / "y", left=[short], right=[mono8(T0)])
    with pytest.raises(MalformedMessageError, match="bytes"):
        list(StereoBag(tmp_path / "y"))


def test_row_padding_is_honoured(tmp_path):
    g = (np.arange(H * W).reshape(H, W) % 251).astype(np.uint8)
    padded = np.concatenate([g, np.full((H, 8), 255, np.uint8)], axis=1)
    raw_bag(tmp_path / "r", left=[(T0, H, W, "mono8", padded.tobytes(), W + 8)],
            right=[mono8(T0)])
    (f,) = list(StereoBag(tmp_path / "r"))
    np.testing.assert_array_equal(np.rint(f.left * 255), g)


def test_decode_image_accepts_rclpy_style_data():
    """rclpy messages carry data as array.array('B') (or bytes): same result as numpy."""
    import array
    from types import SimpleNamespace

    from sdpr_loc.data.messages import decode_image

    g = (np.arange(H * W) % 256).astype(np.uint8)
    for data in (g, array.array("B", g.tobytes()), g.tobytes()):
        msg = SimpleNamespace(height=H, width=W, encoding="mono8", is_bigendian=0, step=W, data=data)
        np.testing.assert_array_equal(decode_image(msg), g.reshape(H, W) / np.float32(255))
    be = SimpleNamespace(height=1, width=2, encoding="mono16", is_bigendian=1, step=4,
                         data=np.array([0xFF, 0xFF, 0x00, 0x01], np.uint8))
    np.testing.assert_allclose(decode_image(be), [[1.0, 1 / 65535]])


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "o.mcap"
    write_stereo_bag(path, make_frames(1))
    with pytest.raises(FileExistsError):
        write_stereo_bag(path, make_frames(1))
    write_stereo_bag(path, make_frames(2), overwrite=True)
    assert len(StereoBag(path)) == 2
    with pytest.raises(ValueError, match="suffix"):
        write_stereo_bag(tmp_path / "x.mcap", make_frames(1), storage="sqlite3")
