"""End-to-end teach-and-repeat run over DDS: the ROS half of `make demo`.

1. a day teach bag and a night repeat bag of the synthetic town (rendered once, then cached);
2. a keyframe map of the teach bag, built with the chosen front end (cached next to the bags);
3. keypoint_node and registration_node (map mode) as separate processes, from the same node
   table as ``sdpr-loc launch localize``;
4. the repeat bag played at its recorded rate, the outputs recorded to a rosbag2 file;
5. a summary (frames, localized %, certified %, median errors against ground truth, latency
   p50 / p95 from image published to pose received) and a PNG of the trajectories.

Front end: the packaged network model when there is one, else ORB (which cannot match day
keypoints at night: expect a low localized % with ``--frontend orb`` and a night repeat).
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

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="bags, map, outputs, PNG")
    parser.add_argument("--world", type=int, default=0, help="synthetic town seed")
    parser.add_argument("--frames", type=int, default=200, help="frames per drive (10 Hz)")
    parser.add_argument("--teach", default="day", choices=("day", "dusk", "night"), help="teach lighting")
    parser.add_argument("--repeat", default="night", choices=("day", "dusk", "night"), help="repeat lighting")
    parser.add_argument("--frontend", default="auto", choices=("auto", "orb", "network"),
                        help="auto: the packaged model if present, else orb")
    parser.add_argument("--model", default="", help="network checkpoint (frontend network)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--every-m", type=float, default=1.0, help="map keyframe spacing (m)")


def _bag(out: Path, world: int, route: str, condition: str, frames: int) -> Path:
    from sdpr_loc.data.bags import write_stereo_bag
    from sdpr_loc.data.synth import make_world, render_drive

    path = out / f"{route}_w{world}_{condition}_{frames}.mcap"
    if not path.exists():
        t0 = time.perf_counter()
        n = write_stereo_bag(path, render_drive(make_world(world), route, condition, frames=frames))
        print(f"rendered {path.name}: {n} frames in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _frontend(args) -> tuple[str, str]:
    if args.frontend != "auto":
        return args.frontend, args.model
    from sdpr_loc.vision.frontend import default_model_path

    if args.model:
        return "network", args.model
    try:
        return "network", str(default_model_path())
    except ValueError:
        return "orb", ""


def _map(out: Path, teach: Path, frontend: str, model: str, every_m: float) -> Path:
    from sdpr_loc.evaluation.build_map_cli import build

    tag = frontend if frontend == "orb" else f"net_{Path(model).stem}"
    path = out / f"{teach.stem}_{tag}.npz"
    if path.exists() and path.stat().st_mtime >= teach.stat().st_mtime and (
            not model or path.stat().st_mtime >= Path(model).stat().st_mtime):
        return path
    t0 = time.perf_counter()
    kmap = build(teach, frontend, model, every_m=every_m, progress=False)
    kmap.save(path)
    print(f"map {path.name}: {len(kmap)} keyframes ({frontend}) in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _plot(path: Path, teach_xy, gt_xy, est: dict, certified: set, teach: str, repeat: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    ax.plot(teach_xy[:, 0], teach_xy[:, 1], color="0.7", lw=3, label=f"teach ({teach}), ground truth")
    ax.plot(gt_xy[:, 0], gt_xy[:, 1], "k-", lw=1, label=f"repeat ({repeat}), ground truth")
    if est:
        xy = np.array([v for _, v in sorted(est.items())])
        ok = np.array([s in certified for s in sorted(est)])
        ax.scatter(xy[ok, 0], xy[ok, 1], s=8, c="tab:green", label="estimated, certified")
        if (~ok).any():
            ax.scatter(xy[~ok, 0], xy[~ok, 1], s=8, c="tab:red", label="estimated, uncertified")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("teach and repeat: map-frame camera positions")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from sdpr_loc.data.bags import StereoBag
    from sdpr_loc.nodes import bringup, launch_cli
    from sdpr_loc.nodes.convert import msg_to_matrix
    from sdpr_loc.nodes.harness import OutputListener
    from sdpr_loc.nodes.play import play
    from sdpr_loc.nodes.record import Recorder

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    teach = _bag(out, args.world, "teach", args.teach, args.frames)
    repeat = _bag(out, args.world, "repeat", args.repeat, args.frames)
    frontend, model = _frontend(args)
    map_path = _map(out, teach, frontend, model, args.every_m)
    with StereoBag(teach) as bag:
        teach_xy = bag.index().poses[:, :2, 3]
    with StereoBag(repeat) as bag:
        idx = bag.index()
        gt = {int(s): T for s, T in zip(idx.stamps, idx.poses)}

    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    launch_args = {"map": str(map_path), "frontend": frontend}
    if model:
        launch_args["model"] = model
    procs = launch_cli.start(bringup.plan("localize", launch_args), env=dict(os.environ), log_dir=out / "logs")
    rclpy.init()
    node = rclpy.create_node("sdpr_loc_demo")
    listener = OutputListener(node)
    outputs = out / f"outputs_{time.strftime('%Y%m%d_%H%M%S')}"
    recorder = None
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    sent: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 120
        while not (node.count_subscribers("/stereo/left/image_rect") and node.count_publishers("/pose")
                   and node.count_publishers("/certificate")):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                print(f"the nodes did not start; see {out / 'logs'}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        recorder = Recorder(node, outputs, ("pose", "odom", "certificate", "/diagnostics"))
        recorder.poll()
        time.sleep(1.0)
        right = "/stereo/right/image_rect"

        def on_publish(topic, t_bag, t_wall):
            if topic == right:
                sent[t_bag] = t_wall   # bags from write_stereo_bag: bag time = header stamp

        print(f"playing {repeat.name} ({len(gt)} frames) into the nodes ({frontend}) ...", flush=True)
        play(node, repeat, rate=args.rate, on_publish=on_publish)
        last = max(gt)
        listener.wait_for(lambda got: last in got.certificate, 10.0)
        time.sleep(0.5)
    finally:
        if recorder is not None:
            recorder.close()
        ex.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.try_shutdown()
        launch_cli.stop(procs)

    got = listener.got
    n = len(gt)
    certified = {s for s, (_, c) in got.certificate.items() if c.get("certified") == "true"}
    est = {s: msg_to_matrix(m.pose.pose) for s, (_, m) in got.pose.items() if s in gt}
    te = [np.linalg.norm(T[:3, 3] - gt[s][:3, 3]) for s, T in est.items()]
    re = [np.degrees(np.arccos(np.clip((np.trace(T[:3, :3].T @ gt[s][:3, :3]) - 1) / 2, -1, 1)))
          for s, T in est.items()]
    lat = np.array([1e3 * (got.pose[s][0] - sent[s]) for s in est if s in sent])
    png = out / "trajectory.png"
    _plot(png, teach_xy, np.array([gt[s][:2, 3] for s in sorted(gt)]),
          {s: T[:2, 3] for s, T in est.items()}, certified, args.teach, args.repeat)
    pct = lambda k: 100.0 * k / max(n, 1)  # noqa: E731
    print(f"\nteach {args.teach} / repeat {args.repeat}, world {args.world}, front end {frontend}, "
          f"map {len(np.load(map_path)['poses'])} keyframes")
    print(f"frames {n}   certificates {len(got.certificate)}   localized {pct(len(est)):.1f} %   "
          f"certified {pct(len(certified)):.1f} %")
    if te:
        print(f"median error {np.median(te):.3f} m, {np.median(re):.2f} deg   "
              f"(p90 {np.percentile(te, 90):.3f} m, {np.percentile(re, 90):.2f} deg)")
    if lat.size:
        print(f"latency image -> pose: p50 {np.percentile(lat, 50):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms")
    print(f"outputs: {outputs} (rosbag2), {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdpr_loc.nodes.demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
