"""Node parameters: one spec table (description, range, choices), defaults from config/localize.yaml.

The yaml file is the single source of default VALUES; this table says what each parameter
means and which values are legal. A node declares every parameter of its table in its
constructor (:func:`declare`), so a bad value from a params file, ``-p`` or ``ros2 param set`` is
rejected with a message naming the parameter and the legal values. ``read_only`` parameters
shape the node at start (front end, mode, map) and cannot change while it runs.

Light module: no rclpy import at module level (the launch files and the pip bringup read it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sdpr_loc.resources import share_path

__all__ = ["Spec", "SPECS", "config_path", "share_path", "load_defaults", "declare"]

PACKAGE = "sdpr_loc"


@dataclass(frozen=True)
class Spec:
    """One parameter: legal values and meaning (the default value lives in the yaml file)."""

    name: str
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    string_array: bool = False
    float_array: bool = False

    def check(self, value: Any) -> str:
        """'' when ``value`` is legal, else why not."""
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        if self.range is not None:
            lo, hi = self.range
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                return f"{self.name} must be a number in [{lo}, {hi}], got {value!r}"
        return ""


_MANAGED = (  # the lifecycle and the 1 Hz /diagnostics summary of every runtime node (nodes/managed.py)
    Spec("autostart", "configure and activate at start (what a lifecycle manager does); false: wait in "
         "'unconfigured' for lifecycle_msgs ChangeState requests", read_only=True),
    Spec("diagnostics_window_s", "the /diagnostics summary's rates and latency percentiles cover this "
         "many seconds; no input for longer -> WARN", range=(1.0, 3600.0)),
)

_KEYPOINT = (
    Spec("frontend", "keypoint extractor: 'orb' (classical baseline) or 'network' (learned model)",
         choices=("orb", "network"), read_only=True),
    Spec("model_path", "network checkpoint (.pt); '' = the packaged model in share/sdpr_loc/models",
         read_only=True),
    Spec("device", "where the network runs: 'auto' (CUDA when available), 'cpu' or 'cuda'",
         choices=("auto", "cpu", "cuda"), read_only=True),
    Spec("max_keypoints", "ORB keypoint budget per frame", range=(16, 8192), read_only=True),
    Spec("max_disparity", "stereo search range in pixels", range=(8, 1024), read_only=True),
    Spec("sigma_px", "pixel noise std (px) behind the 3D point covariances", range=(0.05, 10.0),
         read_only=True),
    Spec("min_ncc", "ORB right-image match acceptance (normalised cross-correlation)",
         range=(0.0, 1.0), read_only=True),
    Spec("sync_tolerance_ms", "left/right images pair when their stamps differ by at most this (ms)",
         range=(0.0, 1000.0)),
    Spec("min_keypoints_warn", "fewer valid keypoints than this in a frame -> diagnostics WARN",
         range=(0, 100000)),
    Spec("publish_debug_image", "publish keypoints/debug_image with the keypoints drawn"),
    Spec("torch_threads", "CPU threads of torch and of numpy's BLAS (0 = their defaults)", range=(0, 256),
         read_only=True),
) + _MANAGED

_TRACKING = (  # the Tracker's settings, shared by the nodes that localize
    Spec("publish_uncertified", "also publish poses whose optimality certificate failed "
         "(they are never labelled certified)"),
    Spec("publish_integrity", "worst integrity verdict still published: 'OK' (only OK poses), 'WARN' "
         "(FAIL poses are not published) or 'FAIL' (all; the certificate still says FAIL and why)",
         choices=("OK", "WARN", "FAIL")),
    Spec("map_frame", "frame of poses in map mode (REP 105)", read_only=True),
    Spec("odom_frame", "frame of poses in odometry and teach mode (REP 105)", read_only=True),
    Spec("min_matches", "fewer matches -> no registration attempt", range=(3, 100000)),
    Spec("min_inliers", "fewer RANSAC inliers -> the pose is not trusted", range=(3, 100000)),
    Spec("keyframe_distance", "odometry: new keyframe after this much motion (m)", range=(0.0, 1000.0)),
    Spec("keyframe_angle", "odometry: new keyframe after this much rotation (deg)", range=(0.0, 180.0)),
    Spec("max_lost", "frames without a pose before odometry re-seeds / map mode relocalizes",
         range=(0, 100000)),
    Spec("map_candidates", "map mode: keyframes tried per frame", range=(1, 1000)),
    Spec("enough_inliers", "map mode: a trusted candidate keyframe with this many inliers ends the search",
         range=(3, 100000)),
    Spec("max_path_length", "poses kept in the published path", range=(1, 10_000_000)),
    Spec("torch_threads", "CPU threads of torch and of numpy's BLAS (0 = their defaults)", range=(0, 256),
         read_only=True),
    Spec("seed", "RANSAC sampling seed", range=(0, 2**31 - 1), read_only=True),
) + _MANAGED

_REGISTRATION = (
    Spec("mode", "'odometry' (chain poses against previous keyframes) or 'map' (localize in map_path)",
         choices=("odometry", "map"), read_only=True),
    Spec("map_path", "keyframe map (.npz from `sdpr-loc build-map`); required in map mode", read_only=True),
) + _TRACKING

_LOCALIZATION = (
    Spec("mode", "'map' (localize in map_path), 'odometry' (chain poses against previous keyframes) "
         "or 'teach' (odometry that records keyframes and writes them to save_map_path)",
         choices=("map", "odometry", "teach"), read_only=True),
    Spec("map_path", "keyframe map (.npz from `sdpr-loc build-map` or teach mode); required in map mode",
         read_only=True),
    Spec("save_map_path", "teach mode: where ~/save_map and shutdown write the map (.npz, atomically)"),
    Spec("frontend", "'network' (learned, dense matching as trained) or 'orb' (classical keypoints)",
         choices=("network", "orb"), read_only=True),
    Spec("model_path", "network checkpoint (.pt); '' = the packaged model in share/sdpr_loc/models",
         read_only=True),
    Spec("device", "where the network runs: 'auto' (CUDA when available), 'cpu' or 'cuda'",
         choices=("auto", "cpu", "cuda"), read_only=True),
    Spec("max_disparity", "stereo search range in pixels", range=(8, 1024), read_only=True),
    Spec("sigma_px", "pixel noise std (px) behind the 3D point covariances", range=(0.05, 10.0),
         read_only=True),
    Spec("sync_tolerance_ms", "left/right images pair when their stamps differ by at most this (ms)",
         range=(0.0, 1000.0)),
    Spec("base_frame", "child frame of the published pose when camera_to_base is given (REP 105)",
         read_only=True),
    Spec("camera_to_base", "static pose of the base in the camera optical frame [x, y, z, qx, qy, qz, qw]; "
         "[] = publish the camera's pose", read_only=True, float_array=True),
    Spec("prior_sigma_mps", "std of the constant-velocity prediction error (m per s since the last pose)",
         range=(0.001, 100.0)),
    Spec("prior_sigma_dps", "... in rotation (deg per s)", range=(0.001, 1000.0)),
    Spec("search_sigmas", "guided dense search: window half-size in predicted pixel std devs",
         range=(0.5, 20.0)),
    Spec("search_min_px", "guided dense search: smallest window half-size (px)", range=(1, 64)),
    Spec("search_max_px", "guided dense search: largest window half-size (px)", range=(1, 64)),
) + _TRACKING

_TRAINER = (  # node-level; the training hyper-parameters come from config/train.yaml (TRAIN_FILE)
    Spec("teach_bags", "teach (keyframe) rosbag2 files; empty strings are ignored", string_array=True),
    Spec("repeat_bags", "repeat (live) rosbag2 files, one per teach bag", string_array=True),
    Spec("base_model", "checkpoint to fine-tune ('' = train from scratch; sets init_from)"),
    Spec("output", "fine-tuned network checkpoint, written atomically at the end or on stop"),
    Spec("run_dir", "training run directory (full-state checkpoints for resume, logs)"),
    Spec("device", "'auto' (CUDA when available), 'cpu' or 'cuda'", choices=("auto", "cpu", "cuda")),
    Spec("autostart", "start training at launch instead of on the ~/start service", read_only=True),
    Spec("progress_period", "seconds between progress messages", range=(0.05, 3600.0), read_only=True),
)
TRAIN_FILE = "train.yaml"   # the trainer's own defaults (owned by sdpr_loc.training.config)

SPECS: dict[str, tuple[Spec, ...]] = {
    "keypoint_node": _KEYPOINT, "registration_node": _REGISTRATION, "trainer_node": _TRAINER,
    "localization_node": _LOCALIZATION}


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def config_path(name: str = "localize.yaml") -> Path:
    """config/<name> of the package (localize.yaml: node parameters; train.yaml: training)."""
    return share_path("config", name)


def load_defaults(node_name: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``ros__parameters`` of ``node_name`` (merged over a ``/**`` section) in a params file."""
    import yaml

    path = Path(path) if path else config_path()
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a ROS parameter file (top level is not a mapping)")
    out: dict[str, Any] = {}
    for key in ("/**", node_name, "/" + node_name):
        section = data.get(key) or {}
        params = section.get("ros__parameters", {}) if isinstance(section, dict) else {}
        if not isinstance(params, dict):
            raise ValueError(f"{path}: {key}.ros__parameters is not a mapping")
        out.update(params)
    return out


# ------------------------------------------------------------------------------------------------
# declaring (rclpy imported here, lazily)
# ------------------------------------------------------------------------------------------------
def _descriptor(spec: Spec, default: Any):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    desc = spec.description
    if spec.choices:
        desc += f" (one of: {', '.join(spec.choices)})"
    d = ParameterDescriptor(description=desc, read_only=spec.read_only)
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(default, int) and not isinstance(default, bool):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    return d


def declare(node, node_name: str, on_change: Callable[[dict[str, Any]], str] | None = None,
            defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Declare ``SPECS[node_name]`` on ``node``; returns {name: value}.

    Overrides (params file, ``-p``) are validated at declaration and raise
    ``rclpy.exceptions.InvalidParameterValueException`` with the reason. Later changes go through
    the spec checks, then ``on_change({name: value})``, which may veto by returning a reason.
    """
    from rcl_interfaces.msg import SetParametersResult

    specs = {s.name: s for s in SPECS[node_name]}
    defaults = load_defaults(node_name) if defaults is None else defaults
    missing = sorted(set(specs) - set(defaults))
    if missing:
        raise ValueError(f"{config_path()} has no default for {node_name} parameters {missing}")
    declared = {"done": False}

    def validate(params) -> SetParametersResult:
        changes = {}
        for p in params:
            spec = specs.get(p.name)
            if spec is None:
                continue
            value = _value(p)
            why = spec.check(value)
            if why:
                return SetParametersResult(successful=False, reason=why)
            changes[p.name] = value
        if declared["done"] and on_change is not None and changes:
            why = on_change(changes)
            if why:
                return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)
    values = {}
    for name, spec in specs.items():
        default = defaults[name]
        if spec.string_array:   # ROS cannot type an empty list: [""] stands for "none"
            default = [str(v) for v in (default or [""])]
        if spec.float_array:    # typed explicitly, so an empty list is a DOUBLE_ARRAY too
            from rclpy.parameter import Parameter

            default = Parameter.Type.DOUBLE_ARRAY if not default else [float(v) for v in default]
        values[name] = _value(node.declare_parameter(name, default, _descriptor(spec, default)))
    declared["done"] = True
    return values


def _value(p) -> Any:
    v = p.value
    if isinstance(v, (list, tuple)) or type(v).__name__ == "array":
        return [x for x in v]
    return v
