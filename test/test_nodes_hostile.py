"""Hostile inputs to the real nodes (rclpy, DDS, one process): every bad frame is reported on
diagnostics with its reason, none is ever certified, and the nodes keep working afterwards."""
import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")

from sdpr_loc.data.messages import pose_to_matrix, stamp_to_ns  # noqa: E402
from sdpr_loc.nodes import convert  # noqa: E402
from hostile_frames import publish_bad_camera_info, publish_bad_encoding  # noqa: E402
from sdpr_loc.data.room import StereoRoom  # noqa: E402
from sdpr_loc.data.synth import default_camera  # noqa: E402

T0 = 1_800_000_000_000_000_000
DT = 100_000_000


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@pytest.fixture(scope="module")
def frames():
    room, cam = StereoRoom(seed=5), default_camera(240, 320, fx=160.0)
    return cam, list(room.frames(6, cam, start_ns=T0, rate_hz=10))


@pytest.fixture
def rig():
    from rclpy.executors import SingleThreadedExecutor

    from sdpr_loc.nodes.graph_probe import OutputListener, StereoPublisher
    from sdpr_loc.nodes.keypoint_node import KeypointNode
    from sdpr_loc.nodes.registration_node import RegistrationNode

    rclpy.init()
    kn, rn = KeypointNode(), RegistrationNode()
    tester = rclpy.create_node("tester")
    pub, out = StereoPublisher(tester), OutputListener(tester)
    ex = SingleThreadedExecutor()
    for n in (kn, rn, tester):
        ex.add_node(n)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    deadline = time.monotonic() + 60   # subscribed once autostart has configured and activated it
    while pub.subscribers() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield kn, rn, tester, pub, out
    ex.shutdown(timeout_sec=2)
    kn.close()
    rn.close()
    for n in (kn, rn, tester):
        n.destroy_node()
    rclpy.try_shutdown()


def _diag_for(out, stamp, level=None):
    def find(got):
        return [d for d in got.diagnostics
                if d.get("stamp_ns") == str(stamp) and (level is None or d["level"] == level)]
    assert out.wait_for(lambda got: bool(find(got)), 10), f"no diagnostics for stamp {stamp}"
    return find(out.got)[-1]


def _cert_for(out, stamp):
    assert out.wait_for(lambda got: stamp in got.certificate, 10), f"no certificate for stamp {stamp}"
    return out.got.certificate[stamp][1]


def test_hostile_inputs_are_reported_and_survived(rig, frames):
    kn, rn, tester, pub, out = rig
    cam, fr = frames
    stamp = iter(range(T0, T0 + 1000 * DT, DT))

    # a good start: the first keyframe, then a certified pose
    for f in fr[:2]:
        s = next(stamp)
        pub.publish(f.left, f.right, cam, s)
        assert _cert_for(out, s)["level"] == 0
    assert out.wait_for(lambda got: s in got.pose, 5)

    # black frame: no keypoints -> WARN from the keypoint node, ERROR certificate, no pose
    s = next(stamp)
    black = np.zeros_like(fr[2].left)
    pub.publish(black, black, cam, s)
    d = _diag_for(out, s, level=1)
    assert "valid keypoints" in d["message"]
    c = _cert_for(out, s)
    assert c["level"] == 2 and c["certified"] == "false" and "keypoints" in c["message"]
    # identical left and right images: zero disparity everywhere, nothing to triangulate
    s = next(stamp)
    pub.publish(fr[2].left, fr[2].left, cam, s)
    c = _cert_for(out, s)
    assert c["level"] == 2 and c["certified"] == "false"
    # unsupported encoding
    s = next(stamp)
    publish_bad_encoding(pub, fr[2].left, fr[2].right, cam, s)
    d = _diag_for(out, s, level=2)
    assert "32FC1" in d["message"] and "not supported" in d["message"]
    # left/right size mismatch
    s = next(stamp)
    pub.publish(fr[2].left, fr[2].right[:, :-8], cam, s)
    assert "right is" in _diag_for(out, s, level=2)["message"]
    # a frame older than the last processed one
    s_old = s - 5 * DT - 1
    pub.publish(fr[2].left, fr[2].right, cam, s_old)
    assert "out of order" in _diag_for(out, s_old, level=1)["message"]
    # NaN and all-zero camera info
    for bad in ("nan", "zero"):
        s = next(stamp)
        publish_bad_camera_info(pub, fr[2].left, fr[2].right, cam, s, bad)
        d = _diag_for(out, s, level=2)
        assert "camera info" in d["message"], d
    # malformed keypoint clouds straight to the registration node
    from sensor_msgs.msg import PointCloud2, PointField

    cloud_pub = tester.create_publisher(PointCloud2, "keypoints", 10)
    while cloud_pub.get_subscription_count() == 0:
        time.sleep(0.02)
    s = next(stamp)
    bad = PointCloud2(header=convert.header(s, "cam"), height=1, width=3, point_step=12, row_step=36,
                      fields=[PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")])
    bad.data = bytes(36)
    cloud_pub.publish(bad)
    c = _cert_for(out, s)
    assert c["level"] == 2 and "bad keypoint cloud" in c["message"] and c["certified"] == "false"
    s = next(stamp)
    bad.header = convert.header(s, "cam")
    bad.fields = []
    bad.data = bytes(5)
    cloud_pub.publish(bad)
    assert _cert_for(out, s)["level"] == 2

    # nothing degenerate was ever certified or published as a pose
    for st, (_, c) in out.got.certificate.items():
        if c["level"] != 0:
            assert c["certified"] == "false" and st not in out.got.pose

    # and the pipeline still works: good frames give certified poses again
    for f in fr[3:5]:
        s = next(stamp)
        pub.publish(f.left, f.right, cam, s)
        time.sleep(0.15)
    assert out.wait_for(lambda got: s in got.pose, 10)
    assert out.got.certificate[s][1]["certified"] == "true"


def test_flood_drops_stale_frames_with_bounded_memory(rig, frames):
    kn, rn, tester, pub, out = rig
    cam, fr = frames
    imgs = [(f.left, f.right) for f in fr]
    s = T0
    pub.publish(*imgs[0], cam, s)
    _cert_for(out, s)
    rss0 = _rss_mb()
    n = 90                                                    # 3 s at 30 Hz
    t_next = time.monotonic()
    for k in range(1, n + 1):
        s = T0 + k * 33_333_333
        pub.publish(*imgs[k % 3], cam, s)
        t_next += 1 / 30
        time.sleep(max(0.0, t_next - time.monotonic()))
    assert out.wait_for(lambda got: s in got.certificate, 15)     # the newest frame is processed
    processed = sum(1 for st in out.got.certificate if st > T0)
    assert processed <= n
    assert len(kn.worker.queue) <= 1 and len(rn.worker.queue) <= 1
    assert _rss_mb() - rss0 < 150
    assert kn.worker.processed >= 10
    # the node is alive and answers parameter requests
    from rclpy.parameter import Parameter

    assert rn.set_parameters([Parameter("publish_uncertified", value=True)])[0].successful


def test_debug_image_on_request(rig, frames):
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    kn, rn, tester, pub, out = rig
    cam, fr = frames
    got = []
    tester.create_subscription(Image, "keypoints/debug_image", got.append, 5)
    assert kn.set_parameters([Parameter("publish_debug_image", value=True)])[0].successful
    while kn.pub_debug.get_subscription_count() == 0:
        time.sleep(0.02)
    pub.publish(fr[0].left, fr[0].right, cam, T0)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got and got[0].encoding == "bgr8" and (got[0].height, got[0].width) == fr[0].left.shape
    assert stamp_to_ns(got[0].header.stamp) == T0


def test_non_standard_frame_size_is_localized(rig):
    """Frames of 200x296 (not 240x320, not a multiple of 16) through the keypoint and
    registration nodes: a certified pose near the ground truth comes out."""
    kn, rn, tester, pub, out = rig
    cam = default_camera(200, 296, fx=148.0)
    fr = list(StereoRoom(seed=5).frames(3, cam, start_ns=T0 + 5000 * DT, rate_hz=10))
    for f in fr:
        pub.publish(f.left, f.right, cam, f.stamp_ns)
        assert _cert_for(out, f.stamp_ns)["level"] == 0
    s = fr[-1].stamp_ns
    assert out.wait_for(lambda got: s in got.pose, 5)
    T = pose_to_matrix(out.got.pose[s][1].pose.pose)
    rel_gt = np.linalg.inv(fr[0].pose) @ fr[-1].pose  # odometry's origin is the first frame
    assert np.linalg.norm(T[:3, 3] - rel_gt[:3, 3]) < 0.05
