"""`sdpr-loc eval`: localize a repeat drive against a map with each method; table, CSV and PNG.

``sdpr-loc eval --odometry drive.mcap --methods orb-certified,opencv-pnp --out DIR`` runs stereo
odometry over one drive instead (``evaluation/odometry.py``): odometry.csv, odometry_frames.csv,
odometry.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from sdpr_loc.argtypes import positive
from sdpr_loc.files import writable_folder
from .localize import METHODS
from .odometry import METHODS as ODOMETRY_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", type=Path, help="map of the teach drive (sdpr-loc build-map)")
    parser.add_argument("--repeat", type=Path, help="repeat drive with ground truth")
    parser.add_argument("--odometry", type=Path,
                        help="instead of --map/--repeat: odometry over this drive (with ground truth)")
    parser.add_argument("--methods", default=None,
                        help=f"comma list from {', '.join(METHODS)} (map; default learned-certified,"
                             f"learned-svd,orb-ransac) or {', '.join(ODOMETRY_METHODS)} (--odometry; default all)")
    parser.add_argument("--features", type=positive(int), default=2000, help="--odometry: ORB features per frame (2000)")
    parser.add_argument("--teach", type=Path, help="teach drive: builds the ORB map for orb-ransac, and "
                        "anchors a map made from odometry to the drive's ground truth (errors are "
                        "measured through the keyframe each pose was localized against)")
    parser.add_argument("--orb-map", type=Path, help="ORB map (instead of building one from --teach)")
    parser.add_argument("--model", default="", help="network checkpoint (default: the packaged model)")
    parser.add_argument("--out", type=Path, default=Path("out/eval"), help="folder for CSV and PNG")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--search", default="guided", choices=("guided", "exhaustive"),
                        help="dense matching with a pose prior: windows around the predicted pixels "
                             "(guided, what the nodes run) or the whole image (exhaustive)")
    parser.add_argument("--publish-integrity", default="WARN", choices=("OK", "WARN", "FAIL"),
                        help="worst integrity verdict counted as localized (published), as the nodes' "
                             "publish_integrity (default WARN: FAIL poses are withheld)")
    parser.add_argument("--kidnapped", action="store_true",
                        help="no prior for the first frame: it must relocalize by place recognition")


def run(args: argparse.Namespace) -> int:
    from sdpr_loc.data.bags import StereoBag
    from sdpr_loc.data.maps import KeyframeMap

    from sdpr_loc.vision.tracker import TrackerConfig

    from .build_map_cli import build
    from .localize import check_map, check_method, keyframe_anchors, run_method
    from .report import plot, plot_integrity, summarize, table, write_csv

    if args.odometry is None and (args.map is None or args.repeat is None):
        raise SystemExit("sdpr-loc eval: pass --map and --repeat (localization) or --odometry DRIVE")
    writable_folder(args.out)
    if args.odometry is not None:
        return run_odometry_eval(args)
    methods = [m.strip() for m in (args.methods or "learned-certified,learned-svd,orb-ransac").split(",")
               if m.strip()]
    for m in methods:
        check_method(m)
    maps = {"network": KeyframeMap.load(args.map)}
    if any(METHODS[m][0] == "network" for m in methods):  # a bad --model fails before any work
        from sdpr_loc.vision.frontend import load_model

        load_model(args.model, args.device)
    if any(METHODS[m][0] == "orb" for m in methods):
        if args.orb_map:
            maps["orb"] = KeyframeMap.load(args.orb_map)
        elif maps["network"].frontend == "orb":
            maps["orb"] = maps["network"]
        elif args.teach:
            maps["orb"] = build(args.teach, "orb")
        else:
            raise SystemExit("orb-ransac needs an ORB map: pass --teach (to build one) or --orb-map")
    for m in methods:  # the map file each method uses, named in the error
        kind = METHODS[m][0]
        check_map(m, maps[kind], f"map {str(args.orb_map if kind == 'orb' and args.orb_map else args.map)!r}")
    anchors = None
    if args.teach:
        with StereoBag(args.teach) as bag:
            idx = bag.index()
        anchors = {k: keyframe_anchors(m, idx.stamps, idx.poses) for k, m in maps.items()}
    per_frame, tracker_config = {}, TrackerConfig(guided=args.search == "guided")
    with StereoBag(args.repeat).require_frames() as bag:
        for m in methods:
            with tqdm(total=len(bag), desc=m, unit="frame") as bar:
                per_frame[m] = run_method(m, maps[METHODS[m][0]], bag, model_path=args.model,
                                          device=args.device, progress=bar, prior=not args.kidnapped,
                                          tracker_config=tracker_config,
                                          anchors=None if anchors is None else anchors[METHODS[m][0]],
                                          publish_integrity=args.publish_integrity)
    rows = [summarize(m, r) for m, r in per_frame.items()]
    print(table(rows))
    csv_path, frames_csv = write_csv(args.out / "eval.csv", rows, per_frame)
    any_map = next(iter(maps.values()))
    png = plot(args.out / "eval.png", per_frame, any_map.poses[:, :2, 3],
               title=f"{args.repeat.name} vs map {args.map.name}")
    ipng = plot_integrity(args.out / "eval_integrity.png", per_frame,
                          position_limit=tracker_config.integrity.max_position_std)
    print(f"wrote {csv_path}, {frames_csv}, {png}, {ipng}")
    return 0


def run_odometry_eval(args: argparse.Namespace) -> int:
    """Odometry of one drive with each method: table, odometry.csv, odometry_frames.csv, odometry.png."""
    from sdpr_loc.data.bags import StereoBag

    from .odometry import run_odometry, summarize
    from .odometry_report import plot, table, write_csv

    methods = [m.strip() for m in (args.methods or ",".join(ODOMETRY_METHODS)).split(",") if m.strip()]
    bad = [m for m in methods if m not in ODOMETRY_METHODS]
    if bad:
        raise SystemExit(f"sdpr-loc eval: unknown odometry method(s) {bad}; choose from {', '.join(ODOMETRY_METHODS)}")
    per_frame = {}
    with StereoBag(args.odometry) as bag:
        if not bag.has_pose:
            raise SystemExit(f"sdpr-loc eval: {args.odometry} has no ground-truth pose topic")
        for m in methods:
            with tqdm(total=len(bag), desc=m, unit="frame") as bar:
                per_frame[m] = run_odometry(m, bag, model_path=args.model, device=args.device,
                                            n_features=args.features, progress=bar)
    rows = [summarize(m, r) for m, r in per_frame.items()]
    print(table(rows))
    csv_path, frames_csv = write_csv(args.out / "odometry.csv", rows, per_frame)
    png = plot(args.out / "odometry.png", per_frame, title=f"odometry on {args.odometry.name}")
    print(f"wrote {csv_path}, {frames_csv}, {png}")
    return 0
