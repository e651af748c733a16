"""`sdpr-loc build-map`: keyframe map of a teach drive (keyframes every ~1 m or ~10 degrees).

``--poses ground-truth`` places keyframes at the bag's ground-truth poses; ``--poses odometry``
needs none: the drive is tracked with the project's own certified visual odometry (the same
Tracker, live-frame kind and matching as the localization node in teach mode), and the keyframes
it makes become the map, in the frame of the drive's first camera pose.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from sdpr_loc.argtypes import positive
from sdpr_loc.files import writable_folder

POSES = ("ground-truth", "odometry")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teach", required=True, type=Path, help="teach drive (rosbag2)")
    parser.add_argument("--model", default="", help="network checkpoint (default: the packaged model)")
    parser.add_argument("--frontend", default="network", choices=("network", "orb"),
                        help="keypoint front end (default network)")
    parser.add_argument("--poses", default="ground-truth", choices=POSES,
                        help="keyframe poses: the bag's ground truth, or the drive's own certified odometry")
    parser.add_argument("--out", required=True, type=Path, help="map file (.npz)")
    parser.add_argument("--every-m", type=positive(float), default=1.0, help="new keyframe after this many metres")
    parser.add_argument("--every-deg", type=positive(float), default=10.0, help="... or this many degrees")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def build(teach: Path, frontend: str, model: str = "", every_m: float = 1.0, every_deg: float = 10.0,
          device: str = "auto", progress: bool = True, poses: str = "ground-truth"):
    """The KeyframeMap of a teach bag (not saved)."""
    from sdpr_loc.data.bags import StereoBag
    from sdpr_loc.data.errors import BagError
    from sdpr_loc.data.maps import build_map

    if poses not in POSES:
        raise ValueError(f"poses must be one of {POSES}, got {poses!r}")
    if poses == "odometry":
        from sdpr_loc.vision.frontend import make_frames

        source = make_frames(frontend, "dense" if frontend == "network" else "keypoints", model, device)
    else:
        from sdpr_loc.vision.frontend import make_extractor

        extract, _ = make_extractor(frontend, model_path=model, device=device)
    with StereoBag(teach).require_frames() as bag:   # the model loads first: its errors come before the bar
        frames = tqdm(bag, total=len(bag), desc=f"map {teach.name} ({poses})", unit="frame", disable=not progress)
        if poses == "odometry":
            kmap = teach_map(frames, source, every_m, every_deg, frontend)
        else:
            kmap = build_map(frames, extract, every_m=every_m, every_deg=every_deg, frontend=frontend)
    if len(kmap) == 0:
        why = ("its frames need ground-truth poses and enough keypoints" if poses == "ground-truth"
               else "odometry found too few keypoints to make one")
        raise BagError(f"teach bag {str(teach)!r} gave no keyframes: {why}")
    return kmap


def teach_map(frames, source, every_m: float = 1.0, every_deg: float = 10.0, frontend: str = "network"):
    """Keyframe map from certified odometry over ``frames`` (no ground truth used); ``source`` is
    :func:`sdpr_loc.vision.frontend.make_frames`'s (make_frame, matching config, description)."""
    from sdpr_loc.data.maps import KeyframeMap
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    make_frame, cfg, _ = source
    tracker = Tracker(TrackerConfig(mode="odometry", keyframe_distance=every_m, keyframe_angle=every_deg),
                      matching=cfg, record=True)
    for fr in frames:
        tracker.process(make_frame(fr.left, fr.right, fr.camera), fr.stamp_ns)
    return KeyframeMap.from_keyframes(tracker.recorded, frontend=frontend)


def run(args: argparse.Namespace) -> int:
    writable_folder(Path(args.out).parent)
    kmap = build(args.teach, args.frontend, args.model, args.every_m, args.every_deg, args.device,
                 poses=args.poses)
    path = kmap.save(args.out)
    print(f"wrote {len(kmap)} keyframes, {kmap.points.shape[0]} points ({args.frontend}, {args.poses} poses) to {path}")
    return 0
