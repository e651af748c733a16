"""localization_node: stereo images -> learned, certified pose, in one process.

The network runs where the images arrive (CUDA when present, else CPU) and the tracker localizes
each frame: dense descriptors never travel over DDS (~20 MB a frame). In ``map`` mode the map's
keypoints are searched in the live frame's dense descriptors around where the pose prior puts them
(guided), or everywhere when there is no prior (start-up, lost: relocalization against the
keyframes the frame's descriptors vote for). ``odometry`` chains frames against the node's own keyframes; ``teach`` does the same
and records the keyframes, written as a map on ``~/save_map`` (std_srvs/Trigger) and at shutdown.

Subscribes ``stereo/{left,right}/image_rect`` and ``stereo/{left,right}/camera_info``
(sensor-data QoS, keep-last 1), and in map mode ``initialpose``
(geometry_msgs/PoseWithCovarianceStamped in the map frame, what RViz's "2D Pose Estimate" sends,
in the outputs' convention: the base's pose with ``camera_to_base``): the next frame is searched
around it instead of relocalizing from scratch. Publishes ``pose``, ``odom``, ``path`` and ``certificate``
(:mod:`sdpr_loc.nodes.pose_output`), stamped like the images; a pose whose integrity verdict is
worse than ``publish_integrity`` (default WARN: FAIL) is not published, its certificate says why.
With ``camera_to_base`` the pose is the base's (``base_frame``), else the left camera optical
frame's. Pairs go through one-slot newest-wins queues to two worker threads: the network runs on
the next frame while the tracker localizes this one (the executor only stashes messages). A lifecycle node with a
1 Hz ``/diagnostics`` summary (:mod:`sdpr_loc.nodes.managed`).
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np

from .managed import Prepared, TrackingNode
from .pose_output import PoseOutputs, camera_pose, parse_extrinsic
from .runtime import cpu_threads, load_map, run
from .stereo_input import FrameError, StereoInput, warm_up_pair
from sdpr_loc.data.messages import pose_to_matrix
from sdpr_loc.vision.integrity import body_covariance, publishable
from sdpr_loc.vision.tracker import ERROR, Tracker, TrackResult

NAME = "localization_node"
__all__ = ["LocalizationNode", "main"]


class LocalizationNode(TrackingNode):
    """Learned (or ORB) certified localization of stereo images; see the module docstring. A
    lifecycle node (:mod:`sdpr_loc.nodes.managed`): configure loads the model and the map,
    activate subscribes, cleanup releases them (teach: writing the map first)."""

    PIPELINED = True
    TRACKER_KEYS = TrackingNode.TRACKER_KEYS + ("prior_sigma_mps", "prior_sigma_dps", "search_sigmas",
                                                "search_min_px", "search_max_px")

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NAME, "localization", **node_kwargs)
        self.make_frame = None
        self._initial_pose, self._initial_lock = None, threading.Lock()

    def configure(self, p: dict) -> None:
        cpu_threads(p["torch_threads"])
        from sdpr_loc.vision.frontend import make_frames

        keyframe_map = load_map(self, p, p["frontend"])
        if p["mode"] == "teach" and not p["save_map_path"]:
            raise ValueError("mode 'teach' needs save_map_path (where the map is written)")
        self.T_cam_base = T_cam_base = parse_extrinsic(p["camera_to_base"])
        matching = "dense" if p["frontend"] == "network" else "keypoints"
        self.make_frame, cfg, what = make_frames(p["frontend"], matching, p["model_path"], p["device"],
                                                 max_disparity=int(p["max_disparity"]), sigma_px=float(p["sigma_px"]))
        self.frontend = what
        self.tracker = Tracker(self.tracker_config(p), keyframe_map, matching=cfg, record=p["mode"] == "teach")
        self.same_drive = self.tracker.same_drive     # what the front stage precomputes for
        self.parent = p["map_frame"] if p["mode"] == "map" else p["odom_frame"]
        self.publish_uncertified = bool(p["publish_uncertified"])
        self.out = PoseOutputs(self, self.parent, p["base_frame"], T_cam_base, int(p["max_path_length"]))
        self._warm_up()
        if self.input is None:   # kept over cleanup / configure: the pairing state is the stream's
            self.input = StereoInput(self, self.submit, int(p["sync_tolerance_ms"] * 1e6))
        self._initial_pose = None
        if p["mode"] == "teach":
            from std_srvs.srv import Trigger

            self.create_service(Trigger, "~/save_map", self._on_save_map)
        self.get_logger().info(f"{p['mode']} mode, {what}")

    def activate(self) -> None:
        self.input.subscribe()
        if self.p["mode"] == "map":
            from geometry_msgs.msg import PoseWithCovarianceStamped

            self.create_subscription(PoseWithCovarianceStamped, "initialpose", self._on_initial_pose, 1)

    def release(self) -> None:
        if self.tracker is not None and self.p["mode"] == "teach" and self.tracker.recorded:
            try:
                ok, message = self.save_map()
            except (OSError, ValueError) as err:
                message = f"cannot write the map: {err}"
            print(f"[{NAME}] {message}", file=sys.stderr, flush=True)
        self.tracker = self.out = self.make_frame = None

    def _warm_up(self) -> None:
        """One throw-away frame at start (library and network initialisation, and for guided
        search both the exhaustive and the windowed code paths), so the first real frame is on time."""
        from sdpr_loc.vision.frames import Keyframe, PosePrior

        try:
            frame = self.make_frame(*warm_up_pair())
            kf = Keyframe.from_keypoints(frame.keypoints, np.eye(4))
            frame.correspond(kf, PosePrior(np.eye(4), np.eye(6) * 1e-4))
            frame.correspond(kf, None)
        except Exception as err:  # noqa: BLE001 - a warm-up failure shows up again on real frames
            self.get_logger().warning(f"warm-up failed: {type(err).__name__}: {err}")

    # ----- initial pose -----
    def _on_initial_pose(self, msg) -> None:
        """Keep a valid initial pose for the worker (the tracker is the worker's alone)."""
        frame = msg.header.frame_id
        T = pose_to_matrix(msg.pose.pose)
        cov = np.asarray(msg.pose.covariance, dtype=np.float64).reshape(6, 6)
        problem = (f"frame {frame!r} is not the map frame {self.parent!r}" if frame and frame != self.parent
                   else "" if np.isfinite(T).all() and np.isfinite(cov).all() else "not finite")
        if not problem and not np.all(np.linalg.eigvalsh(0.5 * (cov + cov.T)) >= -1e-12):
            problem = "covariance is not positive semi-definite"
        if problem:
            self.get_logger().warning(f"initialpose ignored: {problem}")
            return
        T_cam, cov_cam = camera_pose(T, cov, self.T_cam_base)
        with self._initial_lock:
            self._initial_pose = (T_cam, body_covariance(cov_cam, T_cam))
        self.get_logger().info(f"initial pose at x={T[0, 3]:.2f} y={T[1, 3]:.2f} z={T[2, 3]:.2f}")

    # ----- workers: the network on the next frame while this one is localized -----
    def prepare(self, pair):
        """Front stage: decode the pair and run the network (and the per-frame half of dense
        matching, the descriptor norms) on it."""
        left, right, camera, stamp, frame_id = self.input.decode(pair)
        t0 = time.perf_counter()
        frame = self.make_frame(left, right, camera)
        frame.precompute(self.same_drive)
        return frame, stamp, frame_id, 1e3 * (time.perf_counter() - t0)

    def _process(self, job: Prepared) -> None:
        frame, stamp, frame_id, network_ms = job.ready
        with self._initial_lock:
            initial, self._initial_pose = self._initial_pose, None
        if initial is not None:
            self.tracker.set_pose(initial[0], None, initial[1])
        t0 = time.perf_counter()
        res = self.tracker.process(frame, stamp, hurry=lambda: self.behind)
        publish = res.T is not None and (res.certified or (self.publish_uncertified and res.trusted))
        publish = publish and publishable(res.integrity, self.p["publish_integrity"])
        if publish:
            self.out.publish(res, frame_id)
        self._certificate(res, frame_id, publish, {"unpaired": self.input.unpaired, "frontend_ms": network_ms,
                                                  "total_ms": network_ms + 1e3 * (time.perf_counter() - t0)})

    def _on_error(self, pair, exc: BaseException) -> None:
        level = getattr(exc, "level", ERROR)
        reason = str(exc) if isinstance(exc, FrameError) else f"{type(exc).__name__}: {exc}"
        stamp = pair.stamp_ns
        self.get_logger().warning(f"frame {stamp}: {reason}", throttle_duration_sec=1.0)
        self._certificate(TrackResult(stamp, level, reason), pair[0].header.frame_id, False,
                          {"unpaired": self.input.unpaired})


    # ----- teach -----
    def save_map(self) -> tuple[bool, str]:
        """Write the recorded keyframes as a map (atomically); (success, message)."""
        from sdpr_loc.data.maps import KeyframeMap

        recorded = list(self.tracker.recorded)
        if not recorded:
            return False, "no keyframes recorded yet"
        kmap = KeyframeMap.from_keyframes(recorded, frontend=self.p["frontend"], frame_id=self.parent)
        path = kmap.save(self.p["save_map_path"])
        return True, f"wrote {len(kmap)} keyframes to {path}"

    def _on_save_map(self, request, response):
        try:
            response.success, response.message = self.save_map()
        except (OSError, ValueError) as err:
            response.success, response.message = False, f"cannot write the map: {err}"
        self.get_logger().info(response.message)
        return response


def main(args: list[str] | None = None) -> int:
    return run(LocalizationNode, args)


if __name__ == "__main__":
    sys.exit(main())
