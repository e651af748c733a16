"""What every image-consuming node shares: stereo subscriptions, left/right pairing, the camera
from the camera infos, and the checks that turn a bad pair into a reason instead of a crash.

Camera infos and images travel on different topics, so either may arrive first. A pair uses the
camera built from the infos with ITS stamp (drivers stamp them alike); it waits (one pair at most)
until those infos arrive, or uses the latest camera when the infos are not stamped like the images
(newer ones already seen, or the newest is > 1 s older). Callbacks only stash and pair; complete
pairs go to ``submit`` (a node's newest-wins worker queue).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from sdpr_loc.data.messages import camera_from_infos, decode_image, stamp_to_ns

__all__ = ["FrameError", "StereoPair", "StereoInput", "sensor_qos", "warm_up_pair"]


class FrameError(Exception):
    """A frame that cannot be used: level (1 WARN, 2 ERROR) and the reason."""

    def __init__(self, level: int, reason: str) -> None:
        super().__init__(reason)
        self.level = level


def sensor_qos():
    """Sensor-data QoS, keep-last 1: a slow consumer drops stale frames, never queues them."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def warm_up_pair():
    """(left, right, camera): a small random textured pair a node runs once at start, so its first
    real frame does not pay for library initialisation (OpenCV, torch, CUDA)."""
    from sdpr_loc.geometry.stereo import StereoCamera

    img = np.random.default_rng(0).random((96, 128)).astype(np.float32)
    cam = StereoCamera(fx=64.0, fy=64.0, cx=63.5, cy=47.5, baseline=0.2, width=128, height=96)
    return img, np.roll(img, -4, axis=1), cam


class StereoPair(tuple):
    """(left msg, right msg, camera or None, camera error) handed to the worker."""

    @property
    def stamp_ns(self) -> int:
        return stamp_to_ns(self[0].header.stamp)


class StereoInput:
    """Subscribes (:meth:`subscribe`) ``stereo/{left,right}/image_rect`` and
    ``stereo/{left,right}/camera_info`` on ``node`` and calls ``submit(StereoPair)`` for each
    left/right pair (stamps within ``sync_tol_ns``)."""

    def __init__(self, node, submit: Callable[[StereoPair], None], sync_tol_ns: int) -> None:
        self.node, self.submit, self.sync_tol_ns = node, submit, int(sync_tol_ns)
        self._images: dict[str, Any] = {"left": None, "right": None}
        self._infos: dict[str, Any] = {"left": None, "right": None}
        self._cameras: dict[int, tuple] = {}        # info stamp -> (camera or None, error)
        self._latest_camera: tuple = (None, "no camera info received yet")
        self._camera_key, self._info_stamp, self._pending = None, -1, None
        self.unpaired = 0
        self._last_stamp = -1

    def subscribe(self) -> None:
        """Create the four subscriptions (a lifecycle node's activate; its deactivate destroys them)."""
        from sensor_msgs.msg import CameraInfo, Image

        node, qos = self.node, sensor_qos()
        self._images, self._pending = {"left": None, "right": None}, None
        node.create_subscription(Image, "stereo/left/image_rect", lambda m: self._on_image("left", m), qos)
        node.create_subscription(Image, "stereo/right/image_rect", lambda m: self._on_image("right", m), qos)
        node.create_subscription(CameraInfo, "stereo/left/camera_info", lambda m: self._on_info("left", m), qos)
        node.create_subscription(CameraInfo, "stereo/right/camera_info", lambda m: self._on_info("right", m), qos)

    # ----- callbacks: stash and pair, nothing heavy -----
    def _on_info(self, side: str, msg) -> None:
        self._infos[side] = msg
        left, right = self._infos["left"], self._infos["right"]
        if left is None or right is None or left.header.stamp != right.header.stamp:
            return
        stamp = stamp_to_ns(left.header.stamp)
        key = (tuple(np.asarray(left.p, float).tolist()), tuple(np.asarray(right.p, float).tolist()),
               tuple(np.asarray(left.k, float).tolist()), left.width, left.height, right.width, right.height)
        if key != self._camera_key:
            self._camera_key = key
            self._latest_camera = self._build_camera(left, right)
        self._cameras[stamp] = self._latest_camera
        while len(self._cameras) > 16:
            self._cameras.pop(next(iter(self._cameras)))
        self._info_stamp = max(self._info_stamp, stamp)
        if self._pending is not None:
            cam = self._camera_for(stamp_to_ns(self._pending[0].header.stamp))
            if cam is not None:
                self.submit(StereoPair((*self._pending, *cam)))
                self._pending = None

    def _build_camera(self, left, right) -> tuple:
        try:
            return camera_from_infos(left, right), ""
        except ValueError as err:
            why = f"invalid camera info: {err}"
            self.node.get_logger().warning(why, throttle_duration_sec=2.0)
            return None, why

    def _camera_for(self, stamp: int) -> tuple | None:
        """(camera, error) for an image stamp, or None to wait for its camera infos."""
        if stamp in self._cameras:
            return self._cameras[stamp]
        if self._info_stamp > stamp or (self._info_stamp >= 0 and stamp - self._info_stamp > 1_000_000_000):
            return self._latest_camera
        return None

    def _on_image(self, side: str, msg) -> None:
        self._images[side] = msg
        left, right = self._images["left"], self._images["right"]
        if left is None or right is None:
            return
        sl, sr = stamp_to_ns(left.header.stamp), stamp_to_ns(right.header.stamp)
        if abs(sl - sr) > self.sync_tol_ns:  # the older one can never be paired any more: let it go
            self._images["left" if sl < sr else "right"] = None
            self.unpaired += 1
            return
        self._images = {"left": None, "right": None}
        if self._pending is not None:      # its infos never came: go with what there is
            self.submit(StereoPair((*self._pending, *self._latest_camera)))
            self._pending = None
        cam = self._camera_for(sl)
        if cam is None:
            self._pending = (left, right)
        else:
            self.submit(StereoPair((left, right, *cam)))

    # ----- worker side -----
    def decode(self, pair: StereoPair):
        """(left, right) float gray images, camera, stamp_ns and frame_id of a pair, or FrameError
        with the reason (no camera, out of order, size mismatch, undecodable encoding)."""
        lmsg, rmsg, camera, camera_error = pair
        stamp = pair.stamp_ns
        if camera is None:
            raise FrameError(2, camera_error or "no camera info received yet")
        if stamp <= self._last_stamp:
            raise FrameError(1, f"frame at {stamp} ns is not newer than the last one "
                                f"({self._last_stamp} ns): out of order or duplicate, dropped")
        if (lmsg.width, lmsg.height) != (rmsg.width, rmsg.height):
            raise FrameError(2, f"left image is {lmsg.width}x{lmsg.height}, right is {rmsg.width}x{rmsg.height}")
        if camera.width and camera.height and (lmsg.width, lmsg.height) != (camera.width, camera.height):
            raise FrameError(2, f"images are {lmsg.width}x{lmsg.height} but camera info says "
                                f"{camera.width}x{camera.height}")
        try:
            left, right = decode_image(lmsg), decode_image(rmsg)
        except ValueError as err:
            raise FrameError(2, f"cannot decode image: {err}") from None
        self._last_stamp = stamp
        return left, right, camera, stamp, lmsg.header.frame_id or "stereo_left_optical_frame"
