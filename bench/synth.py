"""Synthetic stereo drive speed: render only, and render + write a rosbag2 (the make-bag path).

The issue's target: a 300-frame 240x320 stereo bag in under 60 s on 2 CPU cores, i.e. 5 stereo
frames/s end to end including world building. The last line is the ratio to that target.

    python bench/synth.py [--frames 300]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_FPS = 300 / 60.0


def render_only(world, cond, frames, cam):
    from sdpr_loc.data.synth import render_drive

    it = render_drive(world, "teach" if cond == "day" else "repeat", cond, frames + 1, cam)
    next(it)  # the first frame pays for baking light maps and the road field
    t0 = time.perf_counter()
    n = sum(1 for _ in it)
    return n / (time.perf_counter() - t0)


def end_to_end(frames, storage, seed):
    """make-bag as the CLI does it: world, rendering and bag writing, timed together."""
    from sdpr_loc.data.bags import write_stereo_bag
    from sdpr_loc.data.synth import default_camera, make_world, render_drive

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / ("drive.mcap" if storage == "mcap" else "drive.db3")
        t0 = time.perf_counter()
        world = make_world(seed)
        n = write_stereo_bag(out, render_drive(world, "repeat", "night", frames, default_camera()))
        dt = time.perf_counter() - t0
        size = out.stat().st_size
    return n, dt, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    from sdpr_loc.data.synth import default_camera, make_world

    print(f"cpus: {os.cpu_count()}  (frames/s = stereo pairs per second)")
    t0 = time.perf_counter()
    world = make_world(1)
    print(f"make_world: {time.perf_counter() - t0:.2f} s")
    print(f"{'size':>8} {'condition':>9} | {'render fps':>10}")
    for h, w in ((240, 320), (384, 512)):
        cam = default_camera(h, w)
        for cond in ("day", "dusk", "night"):
            fps = render_only(world, cond, 40, cam)
            print(f"{h}x{w:<4} {cond:>9} | {fps:10.1f}")
    print(f"\nend to end, {args.frames} frames 240x320 night repeat (world + render + write):")
    print(f"{'storage':>8} | {'seconds':>8} {'fps':>6} {'MB':>6}")
    headline = None
    for storage in ("mcap", "sqlite3"):
        n, dt, size = end_to_end(args.frames, storage, 2)
        print(f"{storage:>8} | {dt:8.1f} {n / dt:6.1f} {size / 1e6:6.1f}")
        if storage == "mcap":
            headline = (n / dt) / TARGET_FPS
    print(f"\ntarget: {TARGET_FPS:.1f} frames/s (300 frames in 60 s on 2 cores)")
    print(f"speedup_vs_target: {headline:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
