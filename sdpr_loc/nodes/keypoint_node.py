"""keypoint_node: rectified stereo images -> stereo keypoints (sensor_msgs/PointCloud2).

Subscribes (sensor-data QoS, keep-last 1: a slow consumer drops stale frames, never queues):
``stereo/left/image_rect``, ``stereo/right/image_rect`` (sensor_msgs/Image: mono8, mono16,
rgb8, bgr8), ``stereo/left/camera_info``, ``stereo/right/camera_info``.
Publishes: ``keypoints`` (PointCloud2, layout in :mod:`sdpr_loc.nodes.pointcloud`; one cloud per
processed pair, empty when nothing was found, stamped like the left image),
``keypoints/debug_image`` (optional), ``/diagnostics`` (DiagnosticArray: OK with counts and
timing; WARN / ERROR with the reason for every frame that could not be used; and the 1 Hz
summary ``keypoint_node: keypoints`` of :mod:`sdpr_loc.nodes.managed`). A lifecycle node:
configure builds the front end, activate subscribes.

Left and right pair by header stamp (``sync_tolerance_ms``, :mod:`sdpr_loc.nodes.stereo_input`);
pairs go to a worker thread through a one-slot newest-wins queue, so the executor only stashes
messages.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, PointCloud2

from sdpr_loc.data.messages import stamp_to_ns

from . import convert, pointcloud
from .managed import ManagedNode
from .runtime import cpu_threads, run
from .stereo_input import FrameError, StereoInput, warm_up_pair

NAME = "keypoint_node"
__all__ = ["KeypointNode", "main"]


class KeypointNode(ManagedNode):
    """Stereo keypoints for every image pair (a lifecycle node, :mod:`sdpr_loc.nodes.managed`);
    ``extractor`` replaces the configured front end (tests pass a stand-in)."""

    def __init__(self, extractor: Callable | None = None, **node_kwargs: Any) -> None:
        self._custom_extractor = extractor
        super().__init__(NAME, "keypoints", **node_kwargs)
        self._last_ok_diag = 0.0

    def configure(self, p: dict) -> None:
        self.min_keypoints_warn = int(p["min_keypoints_warn"])
        self.publish_debug = bool(p["publish_debug_image"])
        cpu_threads(p["torch_threads"])
        extractor = self._custom_extractor
        if extractor is None:
            from sdpr_loc.vision.frontend import make_extractor

            extractor, what = make_extractor(p["frontend"], p["model_path"], p["device"],
                                             int(p["max_keypoints"]), int(p["max_disparity"]),
                                             float(p["sigma_px"]), float(p["min_ncc"]))
        else:
            what = getattr(extractor, "__name__", "custom extractor")
        self.extract, self.frontend = extractor, what
        self._warm_up()
        if self.input is None:   # kept over cleanup / configure: the pairing state is the stream's
            self.input = StereoInput(self, self.submit, int(p["sync_tolerance_ms"] * 1e6))
        self.pub_cloud = self.create_lifecycle_publisher(PointCloud2, "keypoints", 2)
        self.pub_debug = self.create_lifecycle_publisher(Image, "keypoints/debug_image", 1)
        self.get_logger().info(f"front end: {what}")

    def activate(self) -> None:
        self.input.subscribe()

    def release(self) -> None:
        self.extract = None

    def _warm_up(self) -> None:
        """One throw-away extraction at start, so the first real frame does not pay for library
        initialisation (OpenCV, torch, CUDA)."""
        try:
            self.extract(*warm_up_pair())
        except Exception as err:  # noqa: BLE001 - a warm-up failure shows up again on real frames
            self.get_logger().warning(f"front end warm-up failed: {type(err).__name__}: {err}")

    # ----- parameters -----
    def params_changed(self, changes: dict) -> str:
        if "min_keypoints_warn" in changes:
            self.min_keypoints_warn = int(changes["min_keypoints_warn"])
        if "publish_debug_image" in changes:
            self.publish_debug = bool(changes["publish_debug_image"])
        return ""

    # ----- worker thread -----
    def _process(self, pair) -> None:
        left, right, camera, stamp, frame_id = self.input.decode(pair)
        t0 = time.perf_counter()
        kp = self.extract(left, right, camera)
        extract_ms = 1e3 * (time.perf_counter() - t0)
        hdr = convert.header(stamp, frame_id)
        self.pub_cloud.publish(pointcloud.to_msg(kp, hdr))
        if self.publish_debug:
            self.pub_debug.publish(convert.debug_image(left, kp, stamp, frame_id))
        n_valid = int(kp.valid[0].sum()) if kp.valid.numel() else 0
        values = {"stamp_ns": stamp, "keypoints": int(kp.valid.shape[-1]), "valid": n_valid,
                  "extract_ms": extract_ms, "dropped": self.queue_drops,
                  "unpaired": self.input.unpaired, "frontend": self.frontend}
        if n_valid < self.min_keypoints_warn:
            self._diag(1, f"only {n_valid} valid keypoints (< {self.min_keypoints_warn}): dark, "
                          "blurred, textureless or left == right frame", values)
        elif time.monotonic() - self._last_ok_diag > 0.5:
            self._last_ok_diag = time.monotonic()
            self._diag(0, f"{n_valid} keypoints", values)

    def _on_error(self, job, exc: BaseException) -> None:
        level = getattr(exc, "level", 2)
        reason = str(exc) if isinstance(exc, FrameError) else f"{type(exc).__name__}: {exc}"
        stamp = stamp_to_ns(job[0].header.stamp)
        self.get_logger().warning(f"frame {stamp}: {reason}", throttle_duration_sec=1.0)
        self._diag(level, reason, {"stamp_ns": stamp, "dropped": self.queue_drops})

    def _diag(self, level: int, message: str, values: dict) -> None:
        arr = DiagnosticArray(header=convert.header(int(values.get("stamp_ns", 0)), ""),
                              status=[convert.diagnostic(level, f"sdpr_loc: {self.get_name()}", message,
                                                         values, hardware_id=self.get_name())])
        self.pub_diag.publish(arr)


def main(args: list[str] | None = None) -> int:
    return run(KeypointNode, args)


if __name__ == "__main__":
    sys.exit(main())
