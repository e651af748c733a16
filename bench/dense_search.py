"""Dense search cost per keyframe: per-level cosines against whole 240-number descriptors.

A map keyframe's ~250 keypoints are searched in a live night frame of the synthetic town (packaged
network, CPU). Measured in the same run on the same frame:

* guided: ``DenseFrame``'s per-level cosines (each level's dot products at its own resolution,
  blended) vs sampling whole 240-number descriptors at every pixel of the windows
  (``KeypointNet.descriptors``, what the tracker did before), windows of --radius px around the
  predicted pixels;
* exhaustive: ``DenseFrame``'s whole-image search (coarse to fine: cosines on a grid of every
  4th pixel, then every pixel around the grid's best local maxima) vs scoring every pixel of the
  full-resolution map (``KeypointNet.dense_descriptors``) times the descriptors, then the same
  peak, second best and sub-pixel position; it prints how many peaks and ratio tests differ;
* encoder: the loaded network (channels-last weights) vs the same network in the default layout;
* stereo pair: what ``DenseFrame`` encodes (the left image, then the right one only to the levels
  stereo matching uses) vs both images in one batch through every level (what it did before);
* norm map: ``DenseFrame.norm`` (dot products of neighbouring cells at each level's resolution,
  blended) vs upsampling every level along x with its channels first (what it did before);
* guided, mixed window sizes (most 4-5 px, a few up to 16 px, as the tracker's prior gives):
  ``DenseFrame.match`` searching windows in size groups vs all with the widest window;
* the whole-image search's second best on the grid: only the grid cells near each peak set
  aside (``_grid_max_outside``) vs testing every cell's distance to the peak (what it did
  before), on this frame's grid cosines and peaks.

Each timing is the median of --repeats runs on one encoded frame whose per-frame caches (the norm
map; the old search's full map) are dropped before each run, so they count; the two exhaustive
searches alternate. Last lines: ``encoder_ratio``, ``window_groups_ratio``, ``exhaustive_ratio:
<per-level / full map>``, ``guided_ratio: <per-level / sampled>``, ``stereo_pair_ratio``,
``norm_ratio`` and ``grid_second_ratio`` (below 1: faster than the peer).
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import numpy as np
import torch


def _median_ms(fn, repeats: int) -> float:
    return _medians_ms([fn], repeats)[0]


def _medians_ms(fns, repeats: int) -> list[float]:
    """Median time of each function, the functions run in turn (a load change hits all alike)."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(1e3 * (time.perf_counter() - t))
    return [statistics.median(ts) for ts in times]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=103)
    parser.add_argument("--radius", type=int, default=6, help="guided window half-size (px)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sdpr_loc.data.synth import make_world, render_drive
    from sdpr_loc.vision.dense import DenseFrame
    from sdpr_loc.vision.frames import Guide
    from sdpr_loc.vision.pipeline import as_image_batch
    from sdpr_loc.vision.frontend import default_model_path, load_model

    net, cfg, _ = load_model(str(default_model_path()), "cpu")
    world = make_world(args.world)
    kf = next(iter(render_drive(world, "teach", "day", frames=1)))
    live = list(render_drive(world, "repeat", "night", frames=3))[-1]
    kp = DenseFrame(net, kf.left, kf.right, kf.camera, cfg).keypoints
    desc = kp.descriptors[0][kp.valid[0]]
    M = len(desc)
    live_frame = DenseFrame(net, live.left, live.right, live.camera, cfg)
    H, W = live_frame.size

    def frame() -> DenseFrame:
        """The live frame with its per-frame caches (norm map, grid) dropped: they count."""
        for name in ("_channels_last", "_grid"):
            live_frame.__dict__.pop(name, None)
        live_frame._norms.clear()
        return live_frame

    rng = np.random.default_rng(0)
    centre = torch.from_numpy(np.stack([rng.integers(0, W, M), rng.integers(0, H, M)], -1))
    o = torch.arange(-args.radius, args.radius + 1)
    U = (centre[:, :1] + o.repeat(len(o))[None]).clamp(0, W - 1)
    V = (centre[:, 1:] + o.repeat_interleave(len(o))[None]).clamp(0, H - 1)

    def sampled():
        f = frame()
        with torch.inference_mode():
            d = net.descriptors(f.left, torch.stack([U, V], -1).reshape(1, -1, 2).float())[0]
            return torch.einsum("mkd,md->mk", d.reshape(M, U.shape[1], -1), desc)

    def per_level():
        f = frame()
        with torch.inference_mode():
            return f._correlate(desc, U, V)

    def full_map():
        """Every pixel of the full map scored (the same chunks of descriptors)."""
        f = frame()
        with torch.inference_mode():
            dense = net.dense_descriptors(f.left)[0].reshape(-1, H * W)
            n, parts = max(1, (1 << 24) // (H * W)), []
            for k in range(0, M, n):
                d = desc[k:k + n]
                m, corr = len(d), d @ dense
                best, arg = corr.max(-1)
                bu, bv = arg % W, torch.div(arg, W, rounding_mode="floor")
                r = torch.arange(-int(cfg.peak_radius), int(cfg.peak_radius) + 1)
                nu = (bu[:, None, None] + r[None, None, :]).clamp(0, W - 1)
                nv = (bv[:, None, None] + r[None, :, None]).clamp(0, H - 1)
                second = corr.scatter(1, (nv * W + nu).reshape(m, -1), -2.0).max(-1).values
                w = torch.arange(-int(cfg.subpixel_window), int(cfg.subpixel_window) + 1)
                U = (bu[:, None, None] + w[None, None, :]).clamp(0, W - 1).expand(-1, len(w), -1)
                V = (bv[:, None, None] + w[None, :, None]).clamp(0, H - 1).expand(-1, -1, len(w))
                uv = f._subpixel(corr.gather(1, (V * W + U).reshape(m, -1)), U, V)
                parts.append((uv, best, f._unique(best, second)))
            return tuple(torch.cat(x) for x in zip(*parts))

    def exhaustive():
        return frame()._exhaustive(desc)

    enc = _median_ms(lambda: DenseFrame(net, live.left, live.right, live.camera, cfg), args.repeats)
    # encoder: the loaded (channels-last) weights against the same network in the default layout
    both = torch.cat([as_image_batch(live.left, "cpu", "left"), as_image_batch(live.right, "cpu", "right")])
    nchw = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        t_cl, t_nchw = _medians_ms([lambda: net.encode(both), lambda: nchw.encode(both)], args.repeats)
        enc_diff = max((a - b).abs().max().item() for a, b in zip(net.encode(both).features,
                                                                   nchw.encode(both).features))
    # the stereo pair as DenseFrame encodes it vs one batch of both through every level
    levels = int(cfg.stereo_levels)
    with torch.inference_mode():
        t_split, t_batch = _medians_ms([lambda: (net.encode(both[:1]), net.encode(both[1:], levels)),
                                        lambda: net.encode(both)], args.repeats)
    # the norm map vs the upsampling it replaced
    t_norm, t_up = _medians_ms([lambda: frame().norm, lambda: upsampled_norm(live_frame.left.features, H, W)],
                               args.repeats)
    norm_diff = ((frame().norm - upsampled_norm(live_frame.left.features, H, W)).abs() / frame().norm).max().item()
    # guided windows of mixed sizes (most 4-5 px, a few up to 16 px): searched in size groups vs in one
    radius = rng.choice([4, 5, 6, 8, 12, 16], size=M, p=[0.35, 0.3, 0.15, 0.12, 0.05, 0.03])
    guide = Guide(uv=centre.numpy().astype(np.float64), radius=radius, inside=np.ones(M, dtype=bool))

    def windows(groups):
        def run():
            DenseFrame.WINDOW_GROUPS = groups
            return frame().match(desc, guide)
        return run

    grouped = DenseFrame.WINDOW_GROUPS
    windows(grouped)(), windows(())()                             # warm-up
    t_g, t_one = _medians_ms([windows(grouped), windows(())], args.repeats)
    same = bool((windows(grouped)().uv == windows(())().uv).all())
    DenseFrame.WINDOW_GROUPS = grouped
    sampled(), per_level()                                        # warm-up
    t_s, t_l = _median_ms(sampled, args.repeats), _median_ms(per_level, args.repeats)
    diff = (sampled() - per_level()).abs().max().item()
    # the grid's second best: the cells near each peak set aside vs every cell's distance tested
    from sdpr_loc.vision.dense import _grid_max_outside

    grid, gu, gv = live_frame._grid
    coarse = (desc @ grid).reshape(M, len(gv), len(gu))
    peak = coarse.reshape(M, -1).argmax(-1)
    pu, pv = gu[peak % len(gu)], gv[peak // len(gu)]
    pr, s = int(cfg.peak_radius), DenseFrame.COARSE_STRIDE

    def every_cell():
        far = ((gu[None, None, :] - pu[:, None, None]).abs() > pr) | ((gv[None, :, None] - pv[:, None, None]).abs() > pr)
        return coarse.masked_fill(~far, -2.0).reshape(M, -1).amax(-1)

    t_near, t_every = _medians_ms([lambda: _grid_max_outside(coarse, pu, pv, s, pr), every_cell], args.repeats)
    same_second = bool(torch.equal(_grid_max_outside(coarse, pu, pv, s, pr), every_cell()))
    full_map(), exhaustive()                                      # warm-up
    t_f, t_e = _medians_ms([full_map, exhaustive], args.repeats)
    (uv_f, best_f, uniq_f), (uv_e, best_e, uniq_e) = full_map(), exhaustive()
    moved_at = (uv_f - uv_e).abs().max(-1).values >= 1e-3
    moved = int(moved_at.sum())
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
          f"world {args.world} night frame {W}x{H}, {M} keyframe keypoints; encoder (both images) {enc:.1f} ms")
    print(f"guided, {len(o)}x{len(o)} windows: sampled descriptors {t_s:.1f} ms, per-level {t_l:.1f} ms "
          f"(max cosine difference {diff:.1e})")
    print(f"exhaustive: every pixel of the full map {t_f:.1f} ms, coarse to fine {t_e:.1f} ms ({moved} of {M} "
          f"peaks moved, of them {int((uniq_f & moved_at).sum())} passing the full map's ratio test; "
          f"{int((uniq_f != uniq_e).sum())} ratio tests differ)")
    print(f"encoder, both images: channels-last weights {t_cl:.1f} ms, default layout {t_nchw:.1f} ms "
          f"(max feature difference {enc_diff:.1e})")
    print(f"guided, mixed window sizes: in size groups {t_g:.1f} ms, all in one {t_one:.1f} ms (same matches: {same})")
    print(f"stereo pair: left + right to {levels} levels, one image a batch {t_split:.1f} ms, both in one batch, "
          f"every level {t_batch:.1f} ms")
    print(f"norm map: neighbouring-cell dots {t_norm:.1f} ms, levels upsampled {t_up:.1f} ms "
          f"(max relative difference {norm_diff:.1e})")
    print(f"grid second best: cells near the peak {t_near:.2f} ms, every cell tested {t_every:.2f} ms "
          f"(same: {same_second})")
    print(f"encoder_ratio: {t_cl / t_nchw:.3f}")
    print(f"window_groups_ratio: {t_g / t_one:.3f}")
    print(f"exhaustive_ratio: {t_e / t_f:.3f}")
    print(f"guided_ratio: {t_l / t_s:.3f}")
    print(f"stereo_pair_ratio: {t_split / t_batch:.3f}")
    print(f"norm_ratio: {t_norm / t_up:.3f}")
    print(f"grid_second_ratio: {t_near / t_every:.3f}")
    return 0


def upsampled_norm(features, H: int, W: int) -> torch.Tensor:
    """The norm map as ``DenseFrame`` computed it before: every level upsampled along x with its
    channels, then the rows blended through their self and neighbour dot products."""
    import torch.nn.functional as F

    from sdpr_loc.vision.dense import _cells

    sq, total = torch.zeros(H, W), torch.zeros(H, W)
    with torch.inference_mode():
        for level, f in enumerate(features):
            s = 2 ** level
            if s > 1:
                f = F.interpolate(f, scale_factor=(1, s), mode="bilinear", align_corners=False)
            f = f[0, :, :, :W]
            h = f.shape[1]
            q = (f * f).sum(0)
            r = (f * f[:, torch.arange(1, h + 1).clamp(max=h - 1)]).sum(0)
            y0, y1, b = _cells(torch.arange(H), s, h)
            a, b = (1 - b)[:, None], b[:, None]
            sq += a * a * q[y0] + 2 * a * b * r[y0] + b * b * q[y1]
            c = f.sum(0)
            total += (1 - b) * c[y0] + b * c[y1]
    D = sum(f.shape[1] for f in features)
    return torch.sqrt((sq - total * total / D).clamp_min(1e-24))


if __name__ == "__main__":
    raise SystemExit(main())
