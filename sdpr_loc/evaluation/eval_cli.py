"""`sdpr-loc eval`: localize a repeat drive against a map with each method; table, CSV and PNG."""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from .localize import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", required=True, type=Path, help="map of the teach drive (sdpr-loc build-map)")
    parser.add_argument("--repeat", required=True, type=Path, help="repeat drive with ground truth")
    parser.add_argument("--methods", default="learned-certified,learned-svd,orb-ransac",
                        help=f"comma list from {', '.join(METHODS)}")
    parser.add_argument("--teach", type=Path, help="teach drive: builds the ORB map for orb-ransac, and "
                        "anchors a map made from odometry to the drive's ground truth (errors are "
                        "measured through the keyframe each pose was localized against)")
    parser.add_argument("--orb-map", type=Path, help="ORB map (instead of building one from --teach)")
    parser.add_argument("--model", default="", help="network checkpoint (default: the packaged model)")
    parser.add_argument("--out", type=Path, default=Path("out/eval"), help="folder for CSV and PNG")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--search", default="guided", choices=("guided", "exhaustive"),
                        help="dense matching with a pose prior: windows around the predicted pixels "
                             "(guided, what the nodes run) or every pixel (exhaustive)")
    parser.add_argument("--publish-integrity", default="WARN", choices=("OK", "WARN", "FAIL"),
                        help="worst integrity verdict counted as localized (published), as the nodes' "
                             "publish_integrity (default WARN: FAIL poses are withheld)")
    parser.add_argument("--kidnapped", action="store_true",
                        help="no prior for the first frame: it must relocalize by place signature")


def run(args: argparse.Namespace) -> int:
    from sdpr_loc.data.bags import StereoBag
    from sdpr_loc.data.maps import KeyframeMap

    from sdpr_loc.vision.tracker import TrackerConfig

    from .build_map_cli import build
    from .localize import check_map, check_method, keyframe_anchors, run_method
    from .report import plot, plot_integrity, summarize, table, write_csv

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
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
    per_frame = {}
    with StereoBag(args.repeat).require_frames() as bag:
        for m in methods:
            with tqdm(total=len(bag), desc=m, unit="frame") as bar:
                per_frame[m] = run_method(m, maps[METHODS[m][0]], bag, model_path=args.model,
                                          device=args.device, progress=bar, prior=not args.kidnapped,
                                          tracker_config=TrackerConfig(guided=args.search == "guided"),
                                          anchors=None if anchors is None else anchors[METHODS[m][0]],
                                          publish_integrity=args.publish_integrity)
    rows = [summarize(m, r) for m, r in per_frame.items()]
    print(table(rows))
    csv_path, frames_csv = write_csv(args.out / "eval.csv", rows, per_frame)
    any_map = next(iter(maps.values()))
    png = plot(args.out / "eval.png", per_frame, any_map.poses[:, :2, 3],
               title=f"{args.repeat.name} vs map {args.map.name}")
    ipng = plot_integrity(args.out / "eval_integrity.png", per_frame)
    print(f"wrote {csv_path}, {frames_csv}, {png}, {ipng}")
    return 0
