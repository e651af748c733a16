"""Metrics, CSV and plots of an evaluation run."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from sdpr_loc.vision.integrity import STATISTICS as STATS, VERDICTS

from .localize import FrameResult

SUCCESS_M, SUCCESS_DEG = 0.25, 2.0
COLUMNS = ("method", "frames", "success_rate", "localized_rate", "certified_rate",
           "certified_of_localized", "median_trans_m", "p90_trans_m", "median_rot_deg", "p90_rot_deg",
           "ms_per_frame", "published_over_1m", "published_missed", "mean_nees", "success_ungated")
MAIN_STAT = "position_std"   # the integrity statistic plotted against the error


def summarize(name: str, results: list[FrameResult]) -> dict:
    """Success (< 0.25 m and < 2 deg) over ALL frames; error percentiles over localized (published)
    frames. published_over_1m: published poses more than 1 m off; published_missed: share of the
    published poses that miss 0.25 m / 2 deg; mean_nees: over the published poses (6 for an
    honest covariance); success_ungated: success had every trusted pose been published (no
    integrity gate)."""
    n = len(results)
    err = np.array([r.errors() for r in results]).reshape(-1, 2)
    loc = np.array([r.localized for r in results], dtype=bool)
    cert = np.array([r.certified for r in results], dtype=bool)
    ok = loc & (err[:, 0] < SUCCESS_M) & (err[:, 1] < SUCCESS_DEG)
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan")  # noqa: E731
    return {
        "method": name, "frames": n,
        "success_rate": float(ok.mean()) if n else float("nan"),
        "localized_rate": float(loc.mean()) if n else float("nan"),
        "certified_rate": float(cert.mean()) if n else float("nan"),
        "certified_of_localized": float(cert[loc].mean()) if loc.any() else float("nan"),
        "median_trans_m": pct(err[loc, 0], 50), "p90_trans_m": pct(err[loc, 0], 90),
        "median_rot_deg": pct(err[loc, 1], 50), "p90_rot_deg": pct(err[loc, 1], 90),
        "ms_per_frame": float(np.mean([r.ms for r in results])) if n else float("nan"),
        "published_over_1m": int((loc & (err[:, 0] > 1.0)).sum()),
        "published_missed": float((loc & ~ok).sum() / loc.sum()) if loc.any() else float("nan"),
        "mean_nees": float(np.mean([r.nees for r in results if r.localized])) if loc.any() else float("nan"),
        "success_ungated": float(((err[:, 0] < SUCCESS_M) & (err[:, 1] < SUCCESS_DEG)).mean()) if n else float("nan"),
    }


def table(rows: list[dict]) -> str:
    head = (f"{'method':18s} {'frames':>6s} {'success':>8s} {'localized':>9s} {'certified':>9s} "
            f"{'med t [m]':>9s} {'p90 t [m]':>9s} {'med r [deg]':>11s} {'p90 r [deg]':>11s} {'ms/frame':>8s} "
            f"{'>1 m':>4s} {'missed':>6s} {'NEES':>6s} {'ungated':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:18s} {r['frames']:6d} {100 * r['success_rate']:7.1f}% "
                     f"{100 * r['localized_rate']:8.1f}% {100 * r['certified_rate']:8.1f}% "
                     f"{r['median_trans_m']:9.3f} {r['p90_trans_m']:9.3f} {r['median_rot_deg']:11.3f} "
                     f"{r['p90_rot_deg']:11.3f} {r['ms_per_frame']:8.1f} {r['published_over_1m']:4d} "
                     f"{100 * r['published_missed']:5.1f}% {r['mean_nees']:6.2f} {100 * r['success_ungated']:6.1f}%")
    return "\n".join(lines)


def write_csv_pair(path: Path, columns, rows: list[dict], frame_header: list[str], frame_rows) -> tuple[Path, Path]:
    """``path`` (one row per method, ``columns``) and ``<path stem>_frames.csv`` (``frame_header``,
    then ``frame_rows``, an iterable of lists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    frames_path = path.with_name(path.stem + "_frames.csv")
    with open(frames_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(frame_header)
        w.writerows(frame_rows)
    return path, frames_path


def write_csv(path: Path, rows: list[dict], per_frame: dict[str, list[FrameResult]]) -> tuple[Path, Path]:
    """<path> (one row per method) and <path stem>_frames.csv (one row per frame and method)."""
    def frame_rows():
        for name, results in per_frame.items():
            for r in results:
                et, er = r.errors()
                p = r.T[:3, 3] if r.T is not None else [float("nan")] * 3
                yield [name, r.stamp_ns, int(r.localized), int(r.certified), r.integrity, r.nees, r.inliers,
                       et, er, *p, *r.T_gt[:3, 3], f"{r.ms:.2f}", r.search,
                       *(r.stats.get(k, float("nan")) for k in STATS), r.reason]

    header = ["method", "stamp_ns", "localized", "certified", "integrity", "nees", "inliers", "trans_err_m",
              "rot_err_deg", "x", "y", "z", "gt_x", "gt_y", "gt_z", "ms", "search", *STATS, "reason"]
    return write_csv_pair(path, COLUMNS, rows, header, frame_rows())


def plot(path: Path, per_frame: dict[str, list[FrameResult]], map_xy: np.ndarray | None = None,
         title: str = "") -> Path:
    """Top-down trajectories (world x-y: the synthetic worlds are z-up) and error over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(13, 5))
    first = next(iter(per_frame.values()))
    gt = np.array([r.T_gt[:3, 3] for r in first])
    if map_xy is not None and len(map_xy):
        ax[0].plot(map_xy[:, 0], map_xy[:, 1], "s", color="0.7", ms=4, label="map keyframes (teach)")
    ax[0].plot(gt[:, 0], gt[:, 1], "k-", lw=1.5, label="repeat ground truth")
    for k, (name, results) in enumerate(per_frame.items()):
        est = np.array([r.T[:3, 3] for r in results if r.T is not None]).reshape(-1, 3)
        ax[0].plot(est[:, 0], est[:, 1], ".", ms=5, color=f"C{k}", label=name)
        t = np.arange(len(results))
        et = np.array([min(r.errors()[0], 10.0) for r in results])
        ax[1].semilogy(t, np.maximum(et, 1e-4), ".-", ms=3, lw=0.8, color=f"C{k}", label=name)
    ax[0].set_xlabel("x [m]"); ax[0].set_ylabel("y [m]"); ax[0].axis("equal"); ax[0].legend(fontsize=8)
    ax[0].set_title("top-down trajectories")
    ax[1].axhline(SUCCESS_M, color="k", ls=":", lw=1, label="success threshold 0.25 m")
    ax[1].set_xlabel("repeat frame"); ax[1].set_ylabel("translation error [m] (10 m = not localized)")
    ax[1].legend(fontsize=8); ax[1].set_title("error over time")
    return save_figure(fig, path, title)


def save_figure(fig, path: Path, title: str = "") -> Path:
    """Title, tight layout, PNG at ``path`` (folders made), figure closed."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_integrity(path: Path, per_frame: dict[str, list[FrameResult]], stat: str = MAIN_STAT,
                   position_limit: float | None = None) -> Path:
    """Translation error of every trusted pose against integrity statistic ``stat``, coloured by
    verdict (published: OK, WARN; withheld: FAIL), one panel per method; for the stated position
    std, its limit (``position_limit``: the run's ``max_position_std``, default the
    IntegrityConfig's) and the lines where the error is 1 and 3 stated sigmas (an honest
    covariance keeps most points below the 3-sigma line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    from sdpr_loc.vision.integrity import IntegrityConfig

    fig, axes = plt.subplots(1, len(per_frame), figsize=(6 * len(per_frame), 4.5), squeeze=False)
    colours = dict(zip(VERDICTS, ("tab:green", "tab:orange", "tab:red")))
    for ax, (name, results) in zip(axes[0], per_frame.items()):
        for v in VERDICTS:
            pts = np.array([(r.stats.get(stat, np.nan), r.errors()[0]) for r in results
                            if r.T is not None and r.integrity == v]).reshape(-1, 2)
            ax.loglog(pts[:, 0], np.maximum(pts[:, 1], 1e-3), "o", ms=4, alpha=0.7, color=colours[v],
                      label=f"{v} ({len(pts)})" + (" withheld" if v == "FAIL" else " published"))
        ax.axhline(SUCCESS_M, color="k", ls=":", lw=1, label="0.25 m")
        ax.axhline(1.0, color="k", ls="--", lw=1, label="1 m")
        xlabel = stat
        if stat == "position_std":
            xlabel = "stated 1-sigma position error [m] (position_std)"
            limit = IntegrityConfig().max_position_std if position_limit is None else position_limit
            ax.axvline(limit, color="tab:red", ls="-.", lw=1, label=f"precision limit {limit:g} m")
            lo, hi = ax.get_xlim()
            x = np.geomspace(lo, hi, 50)
            ax.plot(x, x, color="0.5", lw=0.8, label="error = 1 stated sigma")
            ax.plot(x, 3 * x, color="0.5", lw=0.8, ls="--", label="error = 3 stated sigmas")
            ax.set_xlim(lo, hi)
        for axis in (ax.xaxis, ax.yaxis):                  # 0.01, 0.02, 0.05, 0.1 ...: labels that do not collide
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel), ax.set_ylabel("translation error [m]"), ax.set_title(name)
        ax.legend(fontsize=7)
    return save_figure(fig, path)
