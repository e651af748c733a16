"""Keypoint pipeline: inference rate per stereo pair, and a training step with the certified vs
the SVD pose block, measured in the same run.

Inference (default network, width 16): the network on the left image plus the encoder on the
right one, and the whole front end (``extract_keypoints``: network, keypoints, descriptors,
stereo matching, triangulation, covariances), at 240x320 and 384x512 on CPU, and on CUDA when
present. Training: two trainers with identical weights, one per pose block, take interleaved
steps on the same synthetic teach (day) / repeat (dusk) batches, first at initialisation, then
after a short warm-up (when the local solver certifies most items without the SDP).
Last line: ``train_step_ratio_certified_vs_svd: <ratio>`` (after warm-up).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from sdpr_loc.data.dataset import relative_pose
from sdpr_loc.data.synth import default_camera, make_world, render_drive
from sdpr_loc.training.config import load_params
from sdpr_loc.training.trainer import Trainer
from sdpr_loc.vision.network import KeypointNet, NetworkConfig
from sdpr_loc.vision.pipeline import LocalizerConfig, extract_keypoints


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat):
    """(median, best) wall time [s] of ``fn`` after two warm-up calls. The CPUs here are shared,
    so the best time shows the machine's rate and the median what it gave us in this run."""
    for _ in range(2):
        fn()
    out = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out), min(out)


def inference(sizes, device, repeat):
    torch.manual_seed(0)
    net = KeypointNet(NetworkConfig()).to(device).eval()
    world = make_world(0)
    rows = []
    for H, W in sizes:
        cam = default_camera(H, W)
        fr = next(iter(render_drive(world, "teach", "day", frames=1, camera=cam)))
        left = torch.from_numpy(fr.left)[None, None].to(device)
        right = torch.from_numpy(fr.right)[None, None].to(device)
        cfg = LocalizerConfig(max_disparity=64 if W <= 320 else 96)
        with torch.inference_mode():
            t_net = timed(lambda: (net(left), net.encode(right)), device, repeat)
            t_all = timed(lambda: extract_keypoints(net, left, right, cam, cfg), device, repeat)
            kp = extract_keypoints(net, left, right, cam, cfg)
        rows.append((device.type, f"{H}x{W}", t_net, t_all, kp.uv.shape[1], int(kp.valid.sum())))
    return rows


def pairs_dataset(H, W, frames):
    """Repeat (dusk) frames with their nearest teach (day) frame, as PairDataset-style dicts."""
    world = make_world(0)
    cam = default_camera(H, W)
    teach = list(render_drive(world, "teach", "day", frames=frames, camera=cam))
    rep = list(render_drive(world, "repeat", "dusk", frames=frames, camera=cam))
    tpos = np.stack([t.pose[:3, 3] for t in teach])
    items = []
    for r in rep:
        t = teach[int(np.argmin(np.linalg.norm(tpos - r.pose[:3, 3], axis=1)))]
        items.append({"source": torch.from_numpy(np.stack([r.left, r.right])),
                      "target": torch.from_numpy(np.stack([t.left, t.right])),
                      "T_target_source": torch.from_numpy(relative_pose(t.pose, r.pose)),
                      "camera": cam.intrinsics()})
    return items


def train_steps(items, batch, steps, warmup, out):
    """Interleaved step times (s) of the two blocks at init and after ``warmup`` steps."""
    common = {"progress": False, "tensorboard": False, "batch_size": batch, "augment": False,
              "warmup_steps": 1, "max_disparity": 48}
    tr = {b: Trainer(load_params(None, {**common, "pose_block": b}), items, out_dir=f"{out}/{b}", device="cpu")
          for b in ("certified", "svd")}
    g = torch.Generator().manual_seed(0)

    def batch_of():
        idx = torch.randperm(len(items), generator=g)[:batch].tolist()
        return torch.utils.data.default_collate([items[i] for i in idx])

    def measure(n):
        times = {"certified": [], "svd": []}
        sdp = local = 0
        for _ in range(n):
            b = batch_of()
            for name, t in tr.items():
                t0 = time.perf_counter()
                t.train_step(b)
                times[name].append(time.perf_counter() - t0)
            m = tr["certified"].last_methods
            sdp += m.count("sdp")
            local += m.count("local")
        return {k: statistics.median(v) for k, v in times.items()}, local, sdp

    tr["certified"].last_methods = []
    _hook_methods(tr["certified"])
    tr["svd"].train_step(batch_of())                 # warm up torch kernels and the SDP compile
    tr["certified"].train_step(batch_of())
    at_init = measure(steps)
    for _ in range(warmup):                          # warm-up training with the certified block
        tr["certified"].train_step(batch_of())
    tr["svd"].network.load_state_dict(tr["certified"].network.state_dict())
    tr["svd"].optimizer.load_state_dict(tr["certified"].optimizer.state_dict())
    after = measure(steps)
    return at_init, after


def _hook_methods(trainer):
    """Record which method (local solve / SDP) certified each item of the last step."""
    loc = trainer.localizer
    forward = loc.forward

    def spy(*a, **kw):
        res = forward(*a, **kw)
        trainer.last_methods = list(res.certificate.method)
        return res

    loc.forward = spy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (smoke runs)")
    ap.add_argument("--train-size", default="120x160", help="HxW of the training-step images (120x160)")
    ap.add_argument("--batch", type=int, default=4, help="pairs per training step (4)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    rep = 3 if args.quick else 10
    threads = torch.get_num_threads()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {threads} threads; CUDA: "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}\n")

    rows = inference([(240, 320), (384, 512)], torch.device("cpu"), rep)
    if torch.cuda.is_available():
        rows += inference([(240, 320), (384, 512)], torch.device("cuda"), rep)
    hdr = (f"{'device':>6} {'size':>8} | {'network ms':>10} {'front end ms':>12} {'pairs/s':>8} "
           f"{'best pairs/s':>12} | {'keypoints':>9} {'valid':>5}")
    print("inference per stereo pair (default network: width 16, 4 levels, cell 16); ms are medians")
    print(hdr + "\n" + "-" * len(hdr))
    for dev, size, t_net, t_all, k, v in rows:
        print(f"{dev:>6} {size:>8} | {1e3 * t_net[0]:10.1f} {1e3 * t_all[0]:12.1f} {1 / t_all[0]:8.1f} "
              f"{1 / t_all[1]:12.1f} | {k:9d} {v:5d}")
    if not torch.cuda.is_available():
        print("GPU: not measured (no CUDA device in this run)")

    H, W = (int(v) for v in args.train_size.lower().split("x"))
    items = pairs_dataset(H, W, 12 if args.quick else 24)
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        at_init, after = train_steps(items, args.batch, 3 if args.quick else 8, 10 if args.quick else 40, out)
    print(f"\ntraining step at {H}x{W}, batch {args.batch}, width 16 (forward, losses, backward, clip, Adam)")
    hdr = f"{'state':>14} | {'certified s':>11} {'svd s':>8} {'ratio':>6} | {'local-certified':>15} {'SDP':>5}"
    print(hdr + "\n" + "-" * len(hdr))
    for name, (t, local, sdp) in (("at init", at_init), ("after warm-up", after)):
        print(f"{name:>14} | {t['certified']:11.3f} {t['svd']:8.3f} {t['certified'] / t['svd']:6.2f} | "
              f"{local:15d} {sdp:5d}")
    print("(local-certified / SDP: items certified by the local solver / needing the SDP fallback)")
    ratio = after[0]["certified"] / after[0]["svd"]
    print(f"train_step_ratio_certified_vs_svd: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
