"""`sdpr-loc build-map`: keyframe map of a teach drive (keyframes every ~1 m or ~10 degrees)."""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teach", required=True, type=Path, help="teach drive (rosbag2 with ground truth)")
    parser.add_argument("--model", default="", help="network checkpoint (default: the packaged model)")
    parser.add_argument("--frontend", default="network", choices=("network", "orb"),
                        help="keypoint front end (default network)")
    parser.add_argument("--out", required=True, type=Path, help="map file (.npz)")
    parser.add_argument("--every-m", type=float, default=1.0, help="new keyframe after this many metres")
    parser.add_argument("--every-deg", type=float, default=10.0, help="... or this many degrees")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def build(teach: Path, frontend: str, model: str = "", every_m: float = 1.0, every_deg: float = 10.0,
          device: str = "auto", progress: bool = True):
    """The KeyframeMap of a teach bag (not saved)."""
    from sdpr_loc.data.bags import BagError, StereoBag
    from sdpr_loc.data.maps import build_map
    from sdpr_loc.vision.frontend import make_extractor

    with StereoBag(teach).require_frames() as bag:
        extract, _ = make_extractor(frontend, model_path=model, device=device)
        frames = tqdm(bag, total=len(bag), desc=f"map {teach.name}", unit="frame", disable=not progress)
        kmap = build_map(frames, extract, every_m=every_m, every_deg=every_deg, frontend=frontend)
    if len(kmap) == 0:
        raise BagError(f"teach bag {str(teach)!r} gave no keyframes: its frames need ground-truth "
                       "poses and enough keypoints")
    return kmap


def run(args: argparse.Namespace) -> int:
    kmap = build(args.teach, args.frontend, args.model, args.every_m, args.every_deg, args.device)
    path = kmap.save(args.out)
    print(f"wrote {len(kmap)} keyframes, {kmap.points.shape[0]} points ({args.frontend}) to {path}")
    return 0
