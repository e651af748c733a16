"""``sdpr-loc make-bag``: render a synthetic stereo drive straight into a rosbag2 file.

Example::

    sdpr-loc make-bag --world 3 --condition night --frames 300 --route repeat --out drive.mcap

Frames stream from the renderer into the bag (constant memory). ``--out`` ending in ``.mcap`` or
``.db3`` writes one storage file; any other name writes a rosbag2 directory (``--storage``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sdpr_loc.argtypes import nonnegative, positive
from .lighting import CONDITIONS
from .messages import SUPPORTED_ENCODINGS
from .synth import ROUTES


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 240x320 (HxW), got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world", type=nonnegative(int), default=0, metavar="SEED",
                        help="world seed: same seed, same town (default 0)")
    parser.add_argument("--condition", choices=sorted(CONDITIONS), default="day",
                        help="lighting (default day)")
    parser.add_argument("--frames", type=positive(int), default=300, help="stereo frames (300)")
    parser.add_argument("--route", choices=ROUTES, default="teach",
                        help="teach: reference drive; repeat: same route with offsets")
    parser.add_argument("--seed", type=nonnegative(int), default=0,
                        help="drive seed: which repeat drive, noise and exposure (default 0)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output: *.mcap / *.db3 file, or a rosbag2 directory")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default=None,
                        help="storage for a directory output (default: from the suffix, else mcap)")
    parser.add_argument("--size", type=_size, default=(240, 320), metavar="HxW",
                        help="image size (default 240x320; e.g. 384x512)")
    parser.add_argument("--fx", type=positive(float), default=None,
                        help="focal length in pixels (default 200 * width / 320)")
    parser.add_argument("--baseline", type=positive(float), default=0.24, help="stereo baseline, m (0.24)")
    parser.add_argument("--fps", type=positive(float), default=10.0, help="frame rate (10)")
    parser.add_argument("--speed", type=positive(float), default=5.0, help="vehicle speed, m/s (5)")
    parser.add_argument("--encoding", choices=SUPPORTED_ENCODINGS, default="mono8", help="image encoding")
    parser.add_argument("--distro", choices=("kilted", "jazzy"), default="kilted",
                        help="message typestore (default kilted)")
    parser.add_argument("--force", action="store_true", help="replace an existing bag at --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .bags import write_stereo_bag
    from .synth import default_camera, make_world, render_drive

    out = Path(args.out)
    if (out.exists() or out.is_symlink()) and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    h, w = args.size
    camera = default_camera(h, w, fx=args.fx, baseline=args.baseline)
    t0 = time.perf_counter()
    world = make_world(args.world)
    frames = render_drive(world, args.route, args.condition, args.frames, camera, args.seed,
                          fps=args.fps, speed=args.speed)
    bar = tqdm(frames, total=args.frames, unit="frame", disable=args.no_progress,
               desc=f"{args.route}/{args.condition}", file=sys.stderr)
    n = write_stereo_bag(out, bar, storage=args.storage, encoding=args.encoding,
                         distro=args.distro, overwrite=args.force)
    dt = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in ([out] if out.is_file() else out.rglob("*")) if f.is_file())
    print(f"wrote {n} stereo frames ({w}x{h}, {args.route}, {args.condition}, world {args.world}) "
          f"to {out} [{size / 1e6:.1f} MB] in {dt:.1f} s ({n / dt:.1f} frames/s)")
    return 0
