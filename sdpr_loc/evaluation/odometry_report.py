"""Table, CSV and PNG of an odometry evaluation (``sdpr-loc eval --odometry``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .odometry import OdomFrame, distances
from .report import save_figure, write_csv_pair

COLUMNS = ("method", "frames", "path_m", "reported_rate", "drift_pct", "rpe_trans_median_m", "rpe_trans_p90_m",
           "rpe_rot_median_deg", "rpe_rot_p90_deg", "t_rel_pct", "r_rel_deg_per_100m", "segment_lengths_m",
           "segments", "certified_rate", "uncertified_reported", "ms_per_frame")


def table(rows: list[dict]) -> str:
    head = (f"{'method':18s} {'frames':>6s} {'reported':>8s} {'drift %':>8s} {'RPE t med':>9s} {'RPE t p90':>9s} "
            f"{'RPE r med':>9s} {'RPE r p90':>9s} {'t_rel %':>8s} {'r_rel d/100m':>12s} {'certified':>9s} {'ms/frame':>8s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:18s} {r['frames']:6d} {100 * r['reported_rate']:7.1f}% {r['drift_pct']:8.2f} "
                     f"{r['rpe_trans_median_m']:9.3f} {r['rpe_trans_p90_m']:9.3f} {r['rpe_rot_median_deg']:9.3f} "
                     f"{r['rpe_rot_p90_deg']:9.3f} {r['t_rel_pct']:8.2f} {r['r_rel_deg_per_100m']:12.3f} "
                     f"{100 * r['certified_rate']:8.1f}% {r['ms_per_frame']:8.1f}")
    lines.append(f"segments of {rows[0]['segment_lengths_m']} m along {rows[0]['path_m']:.1f} m of ground truth; "
                 "RPE in m and deg per frame")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict], per_frame: dict[str, list[OdomFrame]]) -> tuple[Path, Path]:
    """``path`` (one row per method) and ``<stem>_frames.csv`` (one row per frame and method)."""
    def frame_rows():
        for name, results in per_frame.items():
            for r in results:
                p = r.T[:3, 3] if r.T is not None else [float("nan")] * 3
                yield [name, r.stamp_ns, int(r.T is not None), int(r.certified), r.inliers, *p,
                       *r.T_gt[:3, 3], f"{r.ms:.2f}", r.reason]

    header = ["method", "stamp_ns", "reported", "certified", "inliers", "x", "y", "z", "gt_x", "gt_y",
              "gt_z", "ms", "reason"]
    return write_csv_pair(path, COLUMNS, rows, header, frame_rows())


def _ground_plane(gt: np.ndarray) -> np.ndarray:
    """(3, 2) top-down axes of a drive from its ground-truth poses (N, 4, 4): the cameras' mean
    down axis (optical y) is the plane's normal; axis 1 is the mean viewing direction in the
    plane, axis 2 = axis 1 x down (to the left)."""
    down = gt[:, :3, 1].mean(0)
    down /= np.linalg.norm(down)
    fwd = gt[:, :3, 2].mean(0)
    fwd = fwd - down * (fwd @ down)
    fwd /= max(np.linalg.norm(fwd), 1e-12)
    return np.stack([fwd, np.cross(fwd, down)], 1)


def plot(path: Path, per_frame: dict[str, list[OdomFrame]], title: str = "") -> Path:
    """Top-down trajectories against ground truth, and translation error over distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(per_frame.values()))
    gt = np.stack([r.T_gt for r in first])
    axes = _ground_plane(gt)
    o = gt[0, :3, 3]
    dist = distances(gt)
    fig, ax = plt.subplots(1, 2, figsize=(13, 5))
    g2 = (gt[:, :3, 3] - o) @ axes
    ax[0].plot(g2[:, 0], g2[:, 1], "k-", lw=2, label="ground truth")
    for k, (name, results) in enumerate(per_frame.items()):
        est = np.stack([r.T[:3, 3] if r.T is not None else np.full(3, np.nan) for r in results])
        e2 = (est - o) @ axes
        ax[0].plot(e2[:, 0], e2[:, 1], ".-", ms=3, lw=1, color=f"C{k}", label=name)
        err = np.linalg.norm(est - gt[:, :3, 3], axis=1)
        ax[1].plot(dist, err, ".-", ms=3, lw=1, color=f"C{k}", label=name)
    ax[0].set_xlabel("forward (start heading) [m]"); ax[0].set_ylabel("left [m]")
    ax[0].axis("equal"); ax[0].legend(fontsize=8); ax[0].set_title("top-down trajectories")
    ax[1].set_xlabel("distance travelled [m]"); ax[1].set_ylabel("position error [m]")
    ax[1].legend(fontsize=8); ax[1].set_title("error over distance")
    return save_figure(fig, path, title)
