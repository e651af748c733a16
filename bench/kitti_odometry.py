"""Stereo odometry on the real KITTI excerpts: import time, then each method's drift and errors.

Imports each sequence of ``--root`` (default ../shared/data/kitti_odometry; skipped with a
message when absent, as in a user's clone) with ``sdpr-loc import-kitti`` and runs
``sdpr-loc eval --odometry`` on it. Targets (issue 14): orb-certified drift <= 2.0 % on 00 and no
worse than the opencv-pnp peer of the same run; import < 30 s per 51 frames.
Last line: ``orb_certified_vs_opencv_pnp_drift: <ratio per sequence>``.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=here.parent / "shared" / "data" / "kitti_odometry")
    ap.add_argument("--sequences", default="00,01")
    ap.add_argument("--methods", default="orb-certified,orb-svd,opencv-pnp")
    ap.add_argument("--scale", type=float, default=1.0, help="import resize factor (0.5: half resolution)")
    ap.add_argument("--out", type=Path, default=Path("runs/kitti"))
    args = ap.parse_args()
    if not (args.root / "sequences").is_dir():
        print(f"no KITTI data at {args.root}: nothing to measure")
        return 0
    from sdpr_loc.cli import main as cli

    ratios = []
    for seq in args.sequences.split(","):
        bag = args.out / f"kitti{seq}.mcap"
        t0 = time.perf_counter()
        assert cli(["import-kitti", str(args.root), "--sequence", seq, "--out", str(bag), "--force",
                    "--scale", str(args.scale), "--no-progress"]) == 0
        print(f"import {seq}: {time.perf_counter() - t0:.1f} s")
        out = args.out / f"odometry{seq}"
        assert cli(["eval", "--odometry", str(bag), "--methods", args.methods, "--out", str(out)]) == 0
        with open(out / "odometry.csv") as fh:
            rows = {r["method"]: r for r in csv.DictReader(fh)}
        if "orb-certified" in rows and "opencv-pnp" in rows:
            ratios.append(f"{seq}={float(rows['orb-certified']['drift_pct']) / float(rows['opencv-pnp']['drift_pct']):.2f}")
    print("orb_certified_vs_opencv_pnp_drift: " + " ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
