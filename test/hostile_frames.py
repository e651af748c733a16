"""Hostile stereo inputs that both node suites publish (test_nodes_hostile.py: keypoint and
registration nodes; test_nodes_localization.py: the localization node). One place for the steps;
each suite asserts on what its nodes report."""
import time

import numpy as np

from sdpr_loc.nodes import convert


def publish_bad_encoding(pub, left, right, camera, stamp_ns: int, encoding: str = "32FC1") -> None:
    """A pair whose left image claims an unsupported ``encoding`` (camera infos valid)."""
    msg = convert.image_to_msg(left, stamp_ns, "stereo_left_optical_frame")
    msg.encoding = encoding
    li, ri = convert.camera_info_msgs(camera, stamp_ns)
    pub.left_info.publish(li)
    pub.right_info.publish(ri)
    pub.left.publish(msg)
    pub.right.publish(convert.image_to_msg(right, stamp_ns, "stereo_right_optical_frame"))


def publish_bad_camera_info(pub, left, right, camera, stamp_ns: int, bad: str) -> None:
    """A good pair after camera infos with a NaN focal length (``bad="nan"``) or all-zero
    projection matrices (``bad="zero"``)."""
    li, ri = convert.camera_info_msgs(camera, stamp_ns)
    if bad == "nan":
        li.p[0] = float("nan")
    else:
        li.p = np.zeros(12)
        ri.p = np.zeros(12)
    pub.left_info.publish(li)
    pub.right_info.publish(ri)
    time.sleep(0.05)
    pub.left.publish(convert.image_to_msg(left, stamp_ns, "l"))
    pub.right.publish(convert.image_to_msg(right, stamp_ns, "r"))
