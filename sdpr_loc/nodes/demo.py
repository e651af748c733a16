"""`sdpr-loc demo` (what `make demo` runs): end-to-end teach-and-repeat over DDS.

1. a day teach bag and a night repeat bag of the synthetic town (rendered once, then cached);
2. a keyframe map of the teach drive, from the drive's own certified odometry (no ground truth;
   ``--poses ground-truth`` for the old way), built with the chosen front end (cached);
3. the localization node (map mode: network + guided dense matching + certified registration in
   one process), started from the same node table as ``sdpr-loc launch localize``;
4. the repeat bag played at its recorded rate, the outputs recorded to a rosbag2 file;
5. a summary through the same report code as ``sdpr-loc eval`` (errors measured through the
   keyframe each pose was localized against, anchored to the teach drive's ground truth), a PNG,
   and three machine-readable lines, last: ``processed:`` (% of repeat frames with a certificate
   message), ``latency_p95_ms:`` (image published -> pose received) and ``success:`` (% of ALL
   repeat frames published as certified poses within 0.25 m and 2 deg).

Front end: the packaged network model when there is one, else ORB (which cannot match day
keypoints at night: expect a low success with ``--frontend orb`` and a night repeat).
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

from sdpr_loc.argtypes import nonnegative, positive
from sdpr_loc.files import writable_folder

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="bags, map, outputs, PNG")
    parser.add_argument("--world", type=nonnegative(int), default=0, help="synthetic town seed")
    parser.add_argument("--frames", type=positive(int), default=200, help="frames per drive (10 Hz)")
    parser.add_argument("--teach", default="day", choices=("day", "dusk", "night"), help="teach lighting")
    parser.add_argument("--repeat", default="night", choices=("day", "dusk", "night"), help="repeat lighting")
    parser.add_argument("--frontend", default="auto", choices=("auto", "orb", "network"),
                        help="auto: the packaged model if present, else orb")
    parser.add_argument("--model", default="", help="network checkpoint (frontend network)")
    parser.add_argument("--rate", type=positive(float), default=1.0, help="playback speed factor")
    parser.add_argument("--every-m", type=positive(float), default=1.0, help="map keyframe spacing (m)")
    parser.add_argument("--poses", default="odometry", choices=("odometry", "ground-truth"),
                        help="map keyframe poses: the teach drive's own odometry, or its ground truth")


def cached_drive(out: Path, world: int, route: str, condition: str, frames: int) -> Path:
    """The bag of a synthetic drive in ``out``, rendered on first use (demo and bench/latency.py)."""
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


def cached_map(out: Path, teach: Path, frontend: str, model: str, every_m: float, poses: str) -> Path:
    """The map of a teach bag in ``out``, rebuilt when the bag or the model is newer."""
    from sdpr_loc.evaluation.build_map_cli import build

    tag = (frontend if frontend == "orb" else f"net_{Path(model).stem}") + f"_{poses}"
    path = out / f"{teach.stem}_{tag}.npz"
    if path.exists() and path.stat().st_mtime >= teach.stat().st_mtime and (
            not model or path.stat().st_mtime >= Path(model).stat().st_mtime):
        return path
    t0 = time.perf_counter()
    kmap = build(teach, frontend, model, every_m=every_m, progress=False, poses=poses)
    kmap.save(path)
    print(f"map {path.name}: {len(kmap)} keyframes ({frontend}) in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def run(args: argparse.Namespace) -> int:
    """``sdpr-loc demo`` (what ``make demo`` runs); returns the exit status."""
    if args.model:  # a bad --model fails now (one line, exit 2), not after the drives are rendered
        from sdpr_loc.vision.frontend import load_model

        load_model(args.model, device="cpu")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from sdpr_loc.data.bags import StereoBag
    from sdpr_loc.data.maps import KeyframeMap
    from sdpr_loc.nodes import bringup, launch_cli
    from sdpr_loc.nodes.graph_probe import OutputListener
    from sdpr_loc.nodes.play import play
    from sdpr_loc.nodes.record import Recorder

    out = writable_folder(args.out)
    teach = cached_drive(out, args.world, "teach", args.teach, args.frames)
    repeat = cached_drive(out, args.world, "repeat", args.repeat, args.frames)
    frontend, model = _frontend(args)
    map_path = cached_map(out, teach, frontend, model, args.every_m, args.poses)
    with StereoBag(teach) as bag:
        teach_idx = bag.index()
    with StereoBag(repeat) as bag:
        idx = bag.index()
        gt = {int(s): T for s, T in zip(idx.stamps, idx.poses)}

    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))
    launch_args = {"map": str(map_path), "frontend": frontend}
    if model:
        launch_args["model"] = model
    procs = launch_cli.start(bringup.plan("localize", launch_args), env=dict(os.environ), log_dir=out / "logs")
    # no rclpy signal handlers: Ctrl-C is a KeyboardInterrupt here (the `finally` below closes the
    # recording and stops the nodes; `sdpr-loc` reports it in one line), not a context shut down
    # under the player's feet (an RCLError traceback)
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node("sdpr_loc_demo")
    listener = OutputListener(node)
    outputs = out / f"outputs_{time.strftime('%Y%m%d_%H%M%S')}"
    recorder = None
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    threading.Thread(target=ex.spin, daemon=True).start()
    sent: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 180
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

        print(f"playing {repeat.name} ({len(gt)} frames) into the localization node ({frontend}) ...", flush=True)
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

    kmap = KeyframeMap.load(map_path)
    results = received_results(listener.got, gt, kmap, teach_idx.stamps, teach_idx.poses)
    lat = np.array([1e3 * (listener.got.pose[s][0] - sent[s]) for s in listener.got.pose if s in sent and s in gt])
    return report(results, lat, listener.got, out, args, frontend, len(kmap), outputs, teach_idx.poses[:, :2, 3])


def received_results(got, gt: dict, kmap, teach_stamps, teach_poses) -> list:
    """What the node published, as evaluation FrameResults (anchored through the keyframe each pose
    was localized against, see :func:`sdpr_loc.evaluation.localize.keyframe_anchors`)."""
    from sdpr_loc.evaluation.localize import FrameResult, keyframe_anchors
    from sdpr_loc.data.messages import pose_to_matrix

    anchors = keyframe_anchors(kmap, teach_stamps, teach_poses)
    results = []
    for s in sorted(gt):
        cert = got.certificate.get(s, (0.0, {}))[1]
        certified = cert.get("certified") == "true"
        T = None
        if s in got.pose and certified:
            k = int(cert.get("keyframe", -1))
            T = pose_to_matrix(got.pose[s][1].pose.pose)
            T = anchors[k] @ T if k >= 0 else T
        ms = float(cert.get("total_ms", "nan")) if cert else float("nan")
        results.append(FrameResult(stamp_ns=s, T_gt=gt[s], T=T, localized=T is not None, certified=certified,
                                   inliers=int(cert.get("inliers", 0) or 0), ms=ms, reason=cert.get("message", ""),
                                   search=cert.get("search", "")))
    return results


def report(results: list, lat: np.ndarray, got, out: Path, args, frontend: str, keyframes: int,
           outputs: Path, teach_xy: np.ndarray) -> int:
    from sdpr_loc.evaluation.report import plot, summarize, table

    n = len(results)
    processed = 100.0 * sum(r.stamp_ns in got.certificate for r in results) / max(n, 1)
    row = summarize(f"ros-{frontend}", results)
    png = plot(out / "trajectory.png", {row["method"]: results}, teach_xy,
               title=f"world {args.world}: {args.repeat} repeat vs {args.teach} map ({args.poses} poses)")
    print(f"\nteach {args.teach} / repeat {args.repeat}, world {args.world}, front end {frontend}, "
          f"map {keyframes} keyframes ({args.poses} poses)")
    print(table([row]))
    if lat.size:
        print(f"latency image -> pose: p50 {np.percentile(lat, 50):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms")
    print(f"outputs: {outputs} (rosbag2), {png}")
    print(f"processed: {processed:.1f}")
    print(f"latency_p95_ms: {float(np.percentile(lat, 95)) if lat.size else float('nan'):.1f}")
    print(f"success: {100.0 * row['success_rate']:.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdpr_loc.nodes.demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
