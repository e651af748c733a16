"""Soak: a long stream of stereo frames through the nodes over DDS; resident memory of every node.

The nodes run as separate processes started from the same node table as `sdpr-loc launch` (each
launch in its own namespace, CPU only unless --gpu), this process plays a synthetic stereo room
(a short drive there and back, looped with increasing stamps) at --rate to every namespace and
counts what comes back (certificates, poses) without keeping per-frame records. Every
--sample-every frames it reads VmRSS of each node from /proc/<pid>/status and checks that every
node is still running.

Prints a progress line per sample, then per node: crashes (exited before the end, or not cleanly
on SIGINT), RSS at the first sample, after warm-up, at the end and its maximum, and the RSS slope
after warm-up in MB per 1,000 frames (of the floor: block minima, Theil-Sen, which transient
spikes do not move; and least squares through all samples); per pipeline: frames published, certificates and poses received, frames without a
certificate (dropped: keep-last-1 QoS and newest-wins queues drop stale frames when a node is
slower than the stream) and the nodes' own queue drops (their /diagnostics summary). Last line:
``rss_growth_mb_per_1k_frames: <max over nodes>`` (block minima). Target (issue 19): 0 crashes,
<= 1 MB per 1,000 frames per node after warm-up, over >= 10,000 frames at >= 10 Hz.

    python bench/soak.py                      # 10,000 frames at 10 Hz (~17 min), both pipelines
    python bench/soak.py --frames 2000 --launch keypoints
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np

T0 = 1_950_000_000_000_000_000


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB), NaN when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def slope_per_1k(frames: list[int], rss: list[float], floor: bool = True) -> float:
    """RSS slope in MB per 1,000 frames (NaN with too few samples).

    ``floor``: the slope of the floor a leak raises - the minimum of each of up to 10 consecutive
    blocks of >= 10 samples, through which a Theil-Sen line (median of the pairwise slopes) is
    fitted. The network node's RSS jumps by 100-250 MB for a sample now and then (a frame's
    transient allocations, given back a moment later) and once in a while dips below its usual
    floor; neither moves this. Else: least squares through all samples.
    """
    x, y = np.asarray(frames, float), np.asarray(rss, float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return float("nan")
    if not floor:
        return float(np.polyfit(x, y, 1)[0] * 1000.0)
    blocks = np.array_split(np.arange(len(x)), max(2, min(10, len(x) // 10)))
    bx = np.array([x[b].mean() for b in blocks])
    by = np.array([y[b].min() for b in blocks])
    i, j = np.triu_indices(len(bx), 1)
    return float(np.median((by[j] - by[i]) / (bx[j] - bx[i])) * 1000.0)


class Counts:
    """Certificates and poses of one namespace, and the latest /diagnostics summary per status name."""

    def __init__(self, node, namespace: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped

        self.certificates = self.poses = 0
        node.create_subscription(DiagnosticArray, f"/{namespace}/certificate", self._cert, 10)
        node.create_subscription(PoseWithCovarianceStamped, f"/{namespace}/pose", self._pose, 10)

    def _cert(self, msg) -> None:
        self.certificates += 1

    def _pose(self, msg) -> None:
        self.poses += 1


def _summaries(node, by_name: dict[str, dict]) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    def on(msg):
        for st in msg.status:
            if ": " in st.name and not st.name.startswith("sdpr_loc"):
                by_name[st.name] = {kv.key: kv.value for kv in st.values} | {"message": st.message}
    node.create_subscription(DiagnosticArray, "/diagnostics", on, 50)


def _frames(width: int, height: int):
    """(camera, drive, loop): a short drive through a synthetic room and the looped stream of it
    (there and back, so it loops without a jump) as uint8 image pairs."""
    from sdpr_loc.data.messages import quantize
    from sdpr_loc.data.room import StereoRoom
    from sdpr_loc.data.synth import default_camera

    cam = default_camera(height, width, fx=width / 2.0)
    drive = list(StereoRoom(seed=5).frames(10, cam, start_ns=T0, rate_hz=10))
    loop = drive + drive[-2:0:-1]
    return cam, drive, [(quantize(f.left, "mono8"), quantize(f.right, "mono8")) for f in loop]


def _maps(drive, out: Path, launches: list[str]) -> dict[str, str]:
    """Map mode: a ground-truth keyframe map of the drive per launch's front end (network for
    localize, orb for keypoints). Odometry's position std grows with the distance driven, so a
    looped odometry stream ends up withheld by the integrity precision check: a map keeps poses
    flowing for hours, as on a robot repeating a route."""
    from sdpr_loc.data.maps import build_map
    from sdpr_loc.vision.frontend import make_extractor

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ln in launches:
        frontend = "network" if ln == "localize" else "orb"
        extract, _ = make_extractor(frontend, device="cpu")
        paths[ln] = str(build_map(drive, extract, every_m=0.3, frontend=frontend).save(out / f"map_{frontend}.npz"))
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000, help="frames to publish (>= 10,000 for the target)")
    ap.add_argument("--rate", type=float, default=10.0, help="publish rate (Hz)")
    ap.add_argument("--launch", default="localize,keypoints", help="comma-separated launches (sdpr-loc launch)")
    ap.add_argument("--sample-every", type=int, default=100, help="frames between RSS samples")
    ap.add_argument("--warmup", type=int, default=None,
                    help="frames before the RSS slope is measured (default: min(1000, frames / 4))")
    ap.add_argument("--size", default="320x240", help="image size WxH")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_soak"), help="node logs")
    ap.add_argument("--mode", default="map", choices=("map", "odometry"),
                    help="map: localize in a map of the looped drive; odometry: chain frames (its position "
                         "std grows with distance, so the integrity check withholds poses after a while)")
    ap.add_argument("--gpu", action="store_true", help="let the network use CUDA")
    args = ap.parse_args()
    warmup = min(1000, args.frames // 4) if args.warmup is None else args.warmup
    launches = [x.strip() for x in args.launch.split(",") if x.strip()]
    width, height = (int(v) for v in args.size.lower().split("x"))

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from sdpr_loc.nodes import bringup, launch_cli
    from sdpr_loc.nodes.graph_probe import StereoPublisher

    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(120, 200)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cam, drive, loop = _frames(width, height)
    maps = _maps(drive, args.out, launches) if args.mode == "map" else {}
    procs = []
    for launch in launches:
        plan = bringup.plan(launch, {"namespace": f"soak_{launch}", "use_gpu": str(args.gpu).lower(),
                                     "map": maps.get(launch, "")})
        procs += launch_cli.start(plan, env=env, log_dir=args.out / launch)
        for p in procs[-len(plan):]:
            p.pipeline = launch  # type: ignore[attr-defined]
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)   # Ctrl-C: summary so far
    node = rclpy.create_node("soak_bench")
    pubs = {ln: StereoPublisher(rclpy.create_node("soak_camera", namespace=f"/soak_{ln}")) for ln in launches}
    counts = {ln: Counts(node, f"soak_{ln}") for ln in launches}
    summaries: dict[str, dict] = {}
    _summaries(node, summaries)
    ex = SingleThreadedExecutor()
    for n in [node, *(p.node for p in pubs.values())]:
        ex.add_node(n)
    threading.Thread(target=ex.spin, daemon=True).start()
    samples: dict[str, list[tuple[int, float]]] = {p.node_name: [] for p in procs}
    crashed: dict[str, str] = {}
    sent, stopped = 0, False
    t_start = time.monotonic()
    print(f"soak: {args.frames} frames at {args.rate:g} Hz, {width}x{height}, launches {launches}, "
          f"{args.mode} mode, nodes {[p.node_name for p in procs]} (pids {[p.pid for p in procs]}), logs {args.out}", flush=True)
    try:
        deadline = time.monotonic() + 300
        while not all(node.count_subscribers(f"/soak_{ln}/stereo/left/image_rect") > 0 for ln in launches):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the nodes did not come up (active); logs in {args.out}")
            time.sleep(0.2)
        print(f"nodes active after {time.monotonic() - t_start:.0f} s", flush=True)
        time.sleep(1.0)
        period = 1.0 / args.rate
        t_next = t0 = time.monotonic()
        for k in range(args.frames + 1):
            if k % args.sample_every == 0 or k == args.frames or stopped:
                for p in procs:
                    if p.poll() is not None and p.node_name not in crashed:
                        crashed[p.node_name] = f"exited with {p.returncode} at frame {k}"
                        print(f"CRASH: {p.node_name} {crashed[p.node_name]}", flush=True)
                    samples[p.node_name].append((k, rss_mb(p.pid)))
                rss = " ".join(f"{p.node_name}={samples[p.node_name][-1][1]:.0f}" for p in procs)
                got = " ".join(f"{ln}: cert {c.certificates} pose {c.poses}" for ln, c in counts.items())
                print(f"[{k:6d}/{args.frames}] {time.monotonic() - t0:6.0f} s  rss_mb {rss}  {got}", flush=True)
            if k == args.frames or stopped:
                break
            try:
                left, right = loop[k % len(loop)]
                for pub in pubs.values():
                    pub.publish(left, right, cam, T0 + k * int(period * 1e9))
                sent += 1
                t_next += period
                time.sleep(max(0.0, t_next - time.monotonic()))
            except KeyboardInterrupt:
                print("interrupted: stopping early", flush=True)
                stopped = True
        elapsed = time.monotonic() - t0
        time.sleep(3.0)                                # the last frames come back
    finally:
        ex.shutdown(timeout_sec=2)
        launch_cli.stop(procs)
        rclpy.try_shutdown()
    for p in procs:
        if p.node_name not in crashed and p.returncode != 0:
            crashed[p.node_name] = f"exit status {p.returncode} on SIGINT"

    print(f"\nframes published: {sent} per pipeline in {elapsed:.0f} s ({sent / elapsed:.2f} Hz)")
    for ln, c in counts.items():
        drops = {name: s.get("queue_drops", "?") for name, s in summaries.items()
                 if any(name.startswith(p.node_name + ":") for p in procs if p.pipeline == ln)}
        print(f"pipeline {ln}: certificates {c.certificates}, poses {c.poses}, frames without a "
              f"certificate (dropped) {sent - c.certificates}, node queue drops {drops}")
    print(f"crashes: {len(crashed)}" + "".join(f"\n  {k}: {v}" for k, v in crashed.items()))
    print(f"{'node':20s} {'rss_first_mb':>12s} {'rss_warm_mb':>12s} {'rss_end_mb':>11s} {'rss_max_mb':>11s} "
          f"{'slope_mb_per_1k':>16s} {'lsq_slope':>10s}  (after warm-up: frame >= {warmup}; slope of block minima)")
    worst = float("-inf")
    for name, s in samples.items():
        frames = [k for k, _ in s]
        rss = [r for _, r in s]
        after = [(k, r) for k, r in s if k >= warmup]
        xs, ys = [k for k, _ in after], [r for _, r in after]
        slope, lsq = slope_per_1k(xs, ys), slope_per_1k(xs, ys, floor=False)
        warm = after[0][1] if after else float("nan")
        worst = max(worst, slope) if np.isfinite(slope) else worst
        print(f"{name:20s} {rss[0]:12.1f} {warm:12.1f} {rss[-1]:11.1f} {np.nanmax(rss):11.1f} {slope:16.3f} "
              f"{lsq:10.3f}  ({len(after)} samples, frames {frames[0]}..{frames[-1]})")
    print(f"rss_growth_mb_per_1k_frames: {worst:.3f}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
