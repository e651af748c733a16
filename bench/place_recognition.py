"""Place recognition for a relocalization: descriptors at the keypoint cells' centres vs detected keypoints.

A night repeat of a synthetic town is relocalized against a map taught by day (packaged network,
CPU). For each night frame, on the same encoded frame, the keyframes it votes for
(``KeyframeMap.candidates``) from:

* ``DenseFrame.place_descriptors``: one descriptor at the centre of every keypoint cell, from the
  whole-image search's grid (what the tracker uses);
* the frame's detected keypoints (``DenseFrame.keypoints``: the detector's decoder, then stereo
  for each keypoint; what it used before), their valid descriptors.

Each is timed from the encoded frame to the candidate list (the frame's caches dropped before
each run, the two alternated), and scored by whether a keyframe among the three nearest the true
pose is among the three voted for. The vote itself (nearest map descriptor of each cell
descriptor, numpy's BLAS) is also timed against the same product in torch (``torch.mm``, what
it used before), on the same descriptors, alternated. Last line:
``place_recognition_ratio: <cells / keypoints>`` (below 1: faster than the peer).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from threadpoolctl import threadpool_limits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=103, help="synthetic town seed (103: a validation world)")
    parser.add_argument("--frames", type=int, default=24, help="night frames relocalized")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of torch and numpy's BLAS (1: as the nodes on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads, user_api="blas")

    from sdpr_loc.data.maps import build_map
    from sdpr_loc.data.synth import make_world, render_drive
    from sdpr_loc.vision.frontend import make_extractor, make_frames

    world = make_world(args.world)
    extract, _ = make_extractor("network", device="cpu")
    kmap = build_map(render_drive(world, "teach", "day", frames=3 * args.frames // 2), extract, every_m=1.0,
                     frontend="network")
    make_frame, _, _ = make_frames("network", "dense", device="cpu")

    def cells(frame):
        return kmap.candidates(frame.place_descriptors, k=3)

    def keypoints(frame):
        kp = frame.keypoints
        return kmap.candidates(kp.descriptors[0][kp.valid[0]], k=3)

    def torch_vote(q):
        """The vote's product and nearest neighbours in torch: the peer of ``candidates``' numpy."""
        sim, j = (q @ torch.from_numpy(kmap.descriptors).T).max(1)
        return j

    ways = {"cells": cells, "keypoints": keypoints}
    vote_ms = {"numpy": [], "torch": []}
    times = {name: [] for name in ways}
    hits = {name: 0 for name in ways}
    night = list(render_drive(world, "repeat", "night", frames=args.frames))
    for f in night:
        frame = make_frame(f.left, f.right, f.camera)
        near = set(kmap.nearest(f.pose, k=3).tolist())
        for name, vote in ways.items():
            for cache in ("_grid", "keypoints"):
                frame.__dict__.pop(cache, None)
            t = time.perf_counter()
            voted = vote(frame)
            times[name].append(1e3 * (time.perf_counter() - t))
            hits[name] += bool(near & set(voted.tolist()))
        q = frame.place_descriptors
        for name, vote in (("numpy", lambda: kmap.candidates(q, k=3)), ("torch", lambda: torch_vote(q))):
            t = time.perf_counter()
            vote()
            vote_ms[name].append(1e3 * (time.perf_counter() - t))

    print(f"world {args.world}: {len(night)} night frames against a day map of {len(kmap)} keyframes "
          f"({len(kmap.descriptors)} descriptors), {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s) of torch and numpy's BLAS")
    print(f"{'votes from':<12}{'ms (median)':>12}{'true keyframe in top 3':>26}")
    for name in ways:
        print(f"{name:<12}{statistics.median(times[name]):>12.1f}{hits[name]:>20d} / {len(night)}")
    print(f"the vote alone ({q.shape[0]} descriptors x {len(kmap.descriptors)}): numpy "
          f"{statistics.median(vote_ms['numpy']):.1f} ms, torch {statistics.median(vote_ms['torch']):.1f} ms "
          f"(numpy / torch: {statistics.median(vote_ms['numpy']) / statistics.median(vote_ms['torch']):.2f})")
    ratio = statistics.median(times["cells"]) / statistics.median(times["keypoints"])
    print(f"place_recognition_ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
