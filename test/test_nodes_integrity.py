"""Integrity over DDS: the registration node (rclpy, real messages) publishes a clean certified pose,
withholds a certified pose that FAILs integrity and says why in its certificate."""
import threading
import time

import pytest

pytestmark = [pytest.mark.ros]
rclpy = pytest.importorskip("rclpy")

from test_integrity import keypoint_frames  # noqa: E402


def test_fail_pose_is_not_published_and_the_certificate_says_why():
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import PointCloud2

    from sdpr_loc.nodes import convert, pointcloud
    from sdpr_loc.nodes.graph_probe import OutputListener
    from sdpr_loc.nodes.registration_node import RegistrationNode

    frames = keypoint_frames(noise=(1.0, 1.5))             # keyframe, clean, 1.5x the modelled noise std
    rclpy.init()
    node = RegistrationNode()
    tester = rclpy.create_node("tester")
    pub = tester.create_publisher(PointCloud2, "keypoints", 10)
    out = OutputListener(tester)
    ex = SingleThreadedExecutor()
    for n in (node, tester):
        ex.add_node(n)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        deadline = time.monotonic() + 60   # subscribed once autostart has configured and activated it
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = {}
        for i, kp in enumerate(frames):
            stamp = 10**8 * (i + 1)
            pub.publish(pointcloud.to_msg(kp, convert.header(stamp, "camera")))
            assert out.wait_for(lambda g: stamp in g.certificate, 30), f"no certificate for {stamp}"
            got[stamp] = out.got.certificate[stamp][1]
        clean, bad = got[2 * 10**8], got[3 * 10**8]
        time.sleep(0.3)                                     # a pose would have arrived by now
        assert clean["certified"] == "true" and clean["integrity"] == "OK" and clean["published"] == "true"
        assert 2 * 10**8 in out.got.pose
        assert bad["certified"] == "true" and bad["integrity"] == "FAIL" and bad["published"] == "false"
        assert 3 * 10**8 not in out.got.pose
        assert bad["level"] == 2 and "integrity FAIL (not published): consistency" in bad["message"]
        assert float(bad["chi2_p"]) < 1e-4 and int(bad["chi2_dof"]) > 200
        assert "consistency" in bad["integrity_reasons"]
    finally:
        ex.shutdown(timeout_sec=2)
        node.close()
        for n in (node, tester):
            n.destroy_node()
        rclpy.try_shutdown()
