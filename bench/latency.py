"""Latency of the ROS pipeline: stereo pair published -> certified pose received, over DDS.

keypoint_node and registration_node run as separate processes (started from the same node table
as `sdpr-loc launch localize`, visual-odometry mode); this process publishes a rendered 240x320
stereo drive (sdpr_loc.nodes.synthetic, played forward then backward so the motion stays
continuous) and listens for `pose` and `certificate`. Reported:

* latency p50 / p95 / max over >= 300 frames at --rate (default 10 Hz), from the moment the
  right image is published to the moment the certified pose arrives;
* the highest publish rate sustained without drops (every frame gets its certificate);
* the peer: the same front end + tracker called in-process (no ROS, no DDS, no second process).

Target: p95 <= 150 ms on 2 CPU cores. Last line: ``ros_vs_inprocess_p50: <ratio>``.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _frames(n_unique: int, total: int, cam):
    from sdpr_loc.nodes.synthetic import StereoRoom, drive_poses

    room = StereoRoom(seed=11)
    poses = drive_poses(n_unique, step_m=0.2)
    imgs = []
    for T in poses:
        left, right = room.stereo(T, cam)
        imgs.append(((left * 255 + 0.5).astype(np.uint8), (right * 255 + 0.5).astype(np.uint8)))
    order = list(range(n_unique)) + list(range(n_unique - 2, 0, -1))   # ping-pong: continuous motion
    return [imgs[order[k % len(order)]] for k in range(total)]


def _inprocess(frames, cam, n: int, extract) -> np.ndarray:
    from sdpr_loc.vision.tracker import Tracker, TrackerConfig

    tr = Tracker(TrackerConfig())
    ms = []
    for k, (left, right) in enumerate(frames[:n]):
        t0 = time.perf_counter()
        kp = extract(left.astype(np.float32) / 255, right.astype(np.float32) / 255, cam)
        tr.process(kp, k + 1)
        ms.append(1e3 * (time.perf_counter() - t0))
    return np.asarray(ms[5:])


def _run_phase(pub, out, frames, cam, stamp0: int, rate: float) -> dict:
    period = 1.0 / rate
    stamps = []
    t_next = time.monotonic()
    for k, (left, right) in enumerate(frames):
        s = stamp0 + k * int(period * 1e9)
        pub.publish(left, right, cam, s)
        stamps.append(s)
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))
    out.wait_for(lambda got: stamps[-1] in got.certificate, 5.0)
    time.sleep(0.5)
    got = out.got
    certs = [s for s in stamps if s in got.certificate]
    certified = [s for s in stamps
                 if s in got.pose and got.certificate.get(s, (0, {}))[1].get("certified") == "true"]
    lat = np.array([1e3 * (got.pose[s][0] - pub.sent[s]) for s in certified])
    return {"rate": rate, "frames": len(stamps), "received": len(certs) / len(stamps),
            "certified": len(certified) / len(stamps), "lat": lat, "last_stamp": stamps[-1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300, help="frames in the latency phase (>= 300)")
    ap.add_argument("--rate", type=float, default=10.0, help="publish rate of the latency phase (Hz)")
    ap.add_argument("--rates", default="10,15,20,30", help="rates tried for the sustained-rate phase")
    ap.add_argument("--rate-frames", type=int, default=100, help="frames per sustained-rate trial")
    ap.add_argument("--frontend", default="orb", choices=("orb", "network"))
    ap.add_argument("--model", default="", help="network checkpoint (frontend network)")
    ap.add_argument("--gpu", action="store_true", help="let the keypoint node use CUDA")
    args = ap.parse_args()

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from sdpr_loc.nodes import bringup, launch_cli
    from sdpr_loc.vision.frontend import make_extractor
    from sdpr_loc.nodes.harness import OutputListener, StereoPublisher
    from sdpr_loc.nodes.synthetic import default_camera

    import torch

    torch.set_num_threads(1)
    cam = default_camera(320, 240)
    rates = [float(r) for r in args.rates.split(",") if r]
    total = 20 + args.frames + args.rate_frames * len(rates)
    t0 = time.perf_counter()
    frames = _frames(150, total, cam)
    print(f"rendered {total} frames (150 unique, 240x320) in {time.perf_counter() - t0:.1f} s", flush=True)

    extract, what = make_extractor(args.frontend, args.model, "auto" if args.gpu else "cpu")
    peer = _inprocess(frames, cam, 80, extract)

    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(120, 200)))
    launch_args = {"use_gpu": "true" if args.gpu else "false", "frontend": args.frontend}
    if args.model:
        launch_args["model"] = args.model
    logs = Path(tempfile.mkdtemp(prefix="sdpr_latency_"))
    procs = launch_cli.start(bringup.plan("localize", launch_args), env=dict(os.environ), log_dir=logs)
    rclpy.init()
    node = rclpy.create_node("latency_bench")
    pub, out = StereoPublisher(node), OutputListener(node)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    results = []
    try:
        deadline = time.monotonic() + 90
        while not (node.count_subscribers("/stereo/left/image_rect") and node.count_publishers("/pose")
                   and node.count_subscribers("/keypoints")):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"nodes did not come up; logs in {logs}")
            time.sleep(0.1)
        time.sleep(1.0)
        stamp = 1_900_000_000_000_000_000
        warm = _run_phase(pub, out, frames[:20], cam, stamp, 5.0)           # warm-up, not reported
        k = 20
        stamp = warm["last_stamp"] + 1_000_000_000
        main_phase = _run_phase(pub, out, frames[k:k + args.frames], cam, stamp, args.rate)
        results.append(main_phase)
        k += args.frames
        for r in rates:
            stamp = results[-1]["last_stamp"] + 1_000_000_000
            results.append(_run_phase(pub, out, frames[k:k + args.rate_frames], cam, stamp, r))
            k += args.rate_frames
    finally:
        ex.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.try_shutdown()
        launch_cli.stop(procs)

    def row(name, r):
        lat = r["lat"]
        p = (lambda q: f"{np.percentile(lat, q):7.1f}") if lat.size else (lambda q: "    n/a")
        return (f"{name:<22}{r['rate']:>6.0f}{r['frames']:>8}{100 * r['received']:>9.1f}"
                f"{100 * r['certified']:>10.1f}{p(50)}{p(95)}{p(100)}")

    cpu = platform.processor() or platform.machine()
    print(f"\nlatency: stereo pair published -> certified pose received ({what}; {cpu}, "
          f"{os.cpu_count()} cores visible)")
    print(f"{'phase':<22}{'Hz':>6}{'frames':>8}{'recv %':>9}{'cert %':>10}{'p50 ms':>7}{'p95 ms':>7}{'max ms':>7}")
    print(row("latency (>= 300 fr)", results[0]))
    sustained = 0.0
    for r in results[1:]:
        print(row("sustained-rate trial", r))
        if r["received"] >= 0.99:
            sustained = max(sustained, r["rate"])
    print(f"{'in-process peer':<22}{'':>6}{peer.size:>8}{'':>9}{'':>10}{np.percentile(peer, 50):7.1f}"
          f"{np.percentile(peer, 95):7.1f}{peer.max():7.1f}")
    lat = results[0]["lat"]
    p95 = float(np.percentile(lat, 95)) if lat.size else float("nan")
    print(f"\nhighest rate sustained without drops: {sustained:.0f} Hz; p95 {p95:.1f} ms vs target 150 ms "
          f"({'met' if p95 <= 150 else 'NOT met'})")
    ratio = float(np.percentile(lat, 50) / np.percentile(peer, 50)) if lat.size else float("nan")
    print(f"ros_vs_inprocess_p50: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
