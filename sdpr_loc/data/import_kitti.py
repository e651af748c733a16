"""``sdpr-loc import-kitti``: a KITTI stereo folder -> a rosbag2 stereo drive.

Examples::

    sdpr-loc import-kitti data/kitti_odometry --sequence 00 --out kitti00.mcap
    sdpr-loc import-kitti raw/2011_09_26/2011_09_26_drive_0001_sync --out drive0001.mcap
    sdpr-loc import-kitti data/kitti_odometry --sequence 00 --scale 0.5 --out kitti00_half.mcap

The bag has the synthetic drives' topics (``/stereo/{left,right}/image_rect``, ``camera_info``
with the right ``P[0,3] = -fx * B``, ``/ground_truth/pose``), stamps from ``times.txt`` (odometry
layout: seconds since the first frame) or the raw timestamps. The whole folder is validated
before writing; the bag is written next to ``--out`` under a temporary name and moved into place
only when complete, so an error leaves nothing at ``--out``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sdpr_loc.argtypes import unit_interval

__all__ = ["add_arguments", "run", "import_kitti"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="KITTI odometry root (with sequences/) or a raw drive folder")
    parser.add_argument("--sequence", default=None, help="odometry sequence NN (e.g. 00)")
    parser.add_argument("--layout", choices=("auto", "odometry", "raw"), default="auto",
                        help="folder layout (default: detected)")
    parser.add_argument("--cameras", choices=("gray", "color"), default="gray",
                        help="gray: cam0/cam1 (default); color: cam2/cam3, converted to gray")
    parser.add_argument("--scale", type=unit_interval, default=1.0,
                        help="resize factor in (0, 1] (camera_info scaled to match; default 1)")
    parser.add_argument("--out", required=True, type=Path, help="output *.mcap / *.db3 or bag directory")
    parser.add_argument("--force", action="store_true", help="replace an existing bag at --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def import_kitti(root, out, sequence=None, layout="auto", cameras="gray", scale=1.0, force=False,
                 progress=True) -> int:
    """Import a KITTI folder into the bag ``out``; returns the frame count. Atomic: on any error
    nothing is left at ``out`` (and an existing bag there is kept)."""
    from tqdm import tqdm

    from .bags import write_stereo_bag
    from .kitti import open_kitti

    out = Path(out)
    if (out.exists() or out.is_symlink()) and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    drive = open_kitti(root, sequence, layout, cameras, scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp = tmpdir / out.name
        frames = tqdm(drive.frames(), total=len(drive), unit="frame", disable=not progress,
                      desc=f"import {Path(root).name}", file=sys.stderr)
        n = write_stereo_bag(tmp, frames, encoding=drive.encoding)
        if out.exists() or out.is_symlink():
            from .bags import remove_bag

            remove_bag(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return n


def run(args: argparse.Namespace) -> int:
    from .errors import BagError

    t0 = time.perf_counter()
    try:
        n = import_kitti(args.root, args.out, args.sequence, args.layout, args.cameras, args.scale,
                         args.force, not args.no_progress)
    except (ValueError, FileExistsError, BagError) as err:
        print(f"sdpr-loc import-kitti: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {n} stereo frames from {args.root} to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0
