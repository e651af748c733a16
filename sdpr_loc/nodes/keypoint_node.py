"""keypoint_node: rectified stereo images -> stereo keypoints (sensor_msgs/PointCloud2).

Subscribes (sensor-data QoS, keep-last 1: a slow consumer drops stale frames, never queues):
``stereo/left/image_rect``, ``stereo/right/image_rect`` (sensor_msgs/Image: mono8, mono16,
rgb8, bgr8), ``stereo/left/camera_info``, ``stereo/right/camera_info``.
Publishes: ``keypoints`` (PointCloud2, layout in :mod:`sdpr_loc.nodes.pointcloud`; one cloud per
processed pair, empty when nothing was found, stamped like the left image),
``keypoints/debug_image`` (optional), ``/diagnostics`` (DiagnosticArray: OK with counts and
timing; WARN / ERROR with the reason for every frame that could not be used).

Left and right pair by header stamp (``sync_tolerance_ms``); pairs go to a worker thread through a
one-slot newest-wins queue, so the executor only stashes messages.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from . import convert, pointcloud
from .params import declare
from .runtime import Worker, run

NAME = "keypoint_node"
__all__ = ["KeypointNode", "main"]


class FrameError(Exception):
    """A frame that cannot be used: level (1 WARN, 2 ERROR) and the reason."""

    def __init__(self, level: int, reason: str) -> None:
        super().__init__(reason)
        self.level = level


def _sensor_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


class KeypointNode(Node):
    """Stereo keypoints for every image pair; ``extractor`` replaces the configured front end
    (tests pass a stand-in)."""

    def __init__(self, extractor: Callable | None = None, **node_kwargs: Any) -> None:
        super().__init__(NAME, **node_kwargs)
        p = declare(self, NAME, on_change=self._on_params)
        self.sync_tol_ns = int(p["sync_tolerance_ms"] * 1e6)
        self.min_keypoints_warn = int(p["min_keypoints_warn"])
        self.publish_debug = bool(p["publish_debug_image"])
        if p["torch_threads"] > 0:
            import torch

            torch.set_num_threads(int(p["torch_threads"]))
        if extractor is None:
            from sdpr_loc.vision.frontend import make_extractor

            extractor, what = make_extractor(p["frontend"], p["model_path"], p["device"],
                                             int(p["max_keypoints"]), int(p["max_disparity"]),
                                             float(p["sigma_px"]), float(p["min_ncc"]))
        else:
            what = getattr(extractor, "__name__", "custom extractor")
        self.extract, self.frontend = extractor, what
        self._warm_up()
        self._images: dict[str, Any] = {"left": None, "right": None}
        self._infos: dict[str, Any] = {"left": None, "right": None}
        self._cameras: dict[int, tuple] = {}        # info stamp -> (camera or None, error)
        self._latest_camera: tuple = (None, "no camera info received yet")
        self._camera_key, self._info_stamp, self._pending = None, -1, None
        self._last_stamp = -1
        self.unpaired = 0
        self.frames_out = 0
        self._last_ok_diag = 0.0
        qos = _sensor_qos()
        self.create_subscription(Image, "stereo/left/image_rect", lambda m: self._on_image("left", m), qos)
        self.create_subscription(Image, "stereo/right/image_rect", lambda m: self._on_image("right", m), qos)
        self.create_subscription(CameraInfo, "stereo/left/camera_info", lambda m: self._on_info("left", m), qos)
        self.create_subscription(CameraInfo, "stereo/right/camera_info", lambda m: self._on_info("right", m), qos)
        self.pub_cloud = self.create_publisher(PointCloud2, "keypoints", 2)
        self.pub_debug = self.create_publisher(Image, "keypoints/debug_image", 1)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.worker = Worker(self._process, self._on_error, maxlen=1, name="keypoints")
        self.get_logger().info(f"front end: {what}")

    def _warm_up(self) -> None:
        """One throw-away extraction at start, so the first real frame does not pay for library
        initialisation (OpenCV, torch, CUDA)."""
        from sdpr_loc.geometry.stereo import StereoCamera

        rng = np.random.default_rng(0)
        img = rng.random((96, 128)).astype(np.float32)
        cam = StereoCamera(fx=64.0, fy=64.0, cx=63.5, cy=47.5, baseline=0.2, width=128, height=96)
        try:
            self.extract(img, np.roll(img, -4, axis=1), cam)
        except Exception as err:  # noqa: BLE001 - a warm-up failure shows up again on real frames
            self.get_logger().warning(f"front end warm-up failed: {type(err).__name__}: {err}")

    # ----- parameters -----
    def _on_params(self, changes: dict) -> str:
        if "sync_tolerance_ms" in changes:
            self.sync_tol_ns = int(changes["sync_tolerance_ms"] * 1e6)
        if "min_keypoints_warn" in changes:
            self.min_keypoints_warn = int(changes["min_keypoints_warn"])
        if "publish_debug_image" in changes:
            self.publish_debug = bool(changes["publish_debug_image"])
        return ""

    # ----- callbacks: stash and pair, nothing heavy -----
    # Camera infos and images travel on different topics, so either may arrive first. A pair
    # uses the camera built from the infos with ITS stamp (drivers stamp them alike); it waits
    # (one pair at most) until those infos arrive, or uses the latest camera when the infos are
    # not stamped like the images (newer ones already seen, or the newest is > 1 s older).
    def _on_info(self, side: str, msg) -> None:
        self._infos[side] = msg
        left, right = self._infos["left"], self._infos["right"]
        if left is None or right is None or left.header.stamp != right.header.stamp:
            return
        stamp = convert.stamp_to_ns(left.header.stamp)
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
            cam = self._camera_for(convert.stamp_to_ns(self._pending[0].header.stamp))
            if cam is not None:
                self.worker.submit((*self._pending, *cam))
                self._pending = None

    def _build_camera(self, left, right) -> tuple:
        from sdpr_loc.geometry.stereo import StereoCamera

        try:
            cam = StereoCamera.from_camera_info(left, right)
            if (right.width, right.height) != (left.width, left.height) and 0 not in (
                    left.width, left.height, right.width, right.height):
                raise ValueError(f"left camera info is {left.width}x{left.height}, right is "
                                 f"{right.width}x{right.height}")
            return cam, ""
        except ValueError as err:
            why = f"invalid camera info: {err}"
            self.get_logger().warning(why, throttle_duration_sec=2.0)
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
        sl, sr = convert.stamp_to_ns(left.header.stamp), convert.stamp_to_ns(right.header.stamp)
        if abs(sl - sr) > self.sync_tol_ns:  # the older one can never be paired any more: let it go
            self._images["left" if sl < sr else "right"] = None
            self.unpaired += 1
            return
        self._images = {"left": None, "right": None}
        if self._pending is not None:      # its infos never came: go with what there is
            self.worker.submit((*self._pending, *self._latest_camera))
            self._pending = None
        cam = self._camera_for(sl)
        if cam is None:
            self._pending = (left, right)
        else:
            self.worker.submit((left, right, *cam))

    # ----- worker thread -----
    def _process(self, job) -> None:
        from sdpr_loc.data.bags import decode_image

        lmsg, rmsg, camera, camera_error = job
        stamp = convert.stamp_to_ns(lmsg.header.stamp)
        frame_id = lmsg.header.frame_id or "stereo_left_optical_frame"
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
        t0 = time.perf_counter()
        kp = self.extract(left, right, camera)
        extract_ms = 1e3 * (time.perf_counter() - t0)
        self._last_stamp = stamp
        hdr = convert.header(stamp, frame_id)
        self.pub_cloud.publish(pointcloud.to_msg(kp, hdr))
        self.frames_out += 1
        if self.publish_debug:
            self.pub_debug.publish(convert.debug_image(left, kp, stamp, frame_id))
        n_valid = int(kp.valid[0].sum()) if kp.valid.numel() else 0
        values = {"stamp_ns": stamp, "keypoints": int(kp.valid.shape[-1]), "valid": n_valid,
                  "extract_ms": extract_ms, "dropped": self.worker.queue.dropped,
                  "unpaired": self.unpaired, "frontend": self.frontend}
        if n_valid < self.min_keypoints_warn:
            self._diag(1, f"only {n_valid} valid keypoints (< {self.min_keypoints_warn}): dark, "
                          "blurred, textureless or left == right frame", values)
        elif time.monotonic() - self._last_ok_diag > 0.5:
            self._last_ok_diag = time.monotonic()
            self._diag(0, f"{n_valid} keypoints", values)

    def _on_error(self, job, exc: BaseException) -> None:
        level = getattr(exc, "level", 2)
        reason = str(exc) if isinstance(exc, FrameError) else f"{type(exc).__name__}: {exc}"
        stamp = convert.stamp_to_ns(job[0].header.stamp)
        self.get_logger().warning(f"frame {stamp}: {reason}", throttle_duration_sec=1.0)
        self._diag(level, reason, {"stamp_ns": stamp, "dropped": self.worker.queue.dropped})

    def _diag(self, level: int, message: str, values: dict) -> None:
        arr = DiagnosticArray(header=convert.header(int(values.get("stamp_ns", 0)), ""),
                              status=[convert.diagnostic(level, f"sdpr_loc: {self.get_name()}", message,
                                                         values, hardware_id=self.get_name())])
        self.pub_diag.publish(arr)

    def close(self) -> None:
        self.worker.stop()


def main(args: list[str] | None = None) -> int:
    return run(KeypointNode, args)


if __name__ == "__main__":
    sys.exit(main())
