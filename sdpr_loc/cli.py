"""The ``sdpr-loc`` command.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``; the
module is imported only when its subcommand is used, so ``sdpr-loc --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Add one line per subcommand.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sdpr_loc.demo", "run the main demo"),
    "polymin-fit": ("sdpr_loc.examples.polymin_fit", "paper example 1: learn where a polynomial's global minimum is"),
    "make-bag": ("sdpr_loc.data.make_bag", "render a synthetic stereo drive to a rosbag2 file"),
    "import-kitti": ("sdpr_loc.data.import_kitti", "import a KITTI stereo folder (odometry or raw layout) as a rosbag2"),
    "launch": ("sdpr_loc.nodes.launch_cli", "start the ROS 2 nodes of a launch (pip twin of ros2 launch)"),
    "play": ("sdpr_loc.nodes.play", "publish a rosbag2's topics at the recorded rate"),
    "record": ("sdpr_loc.nodes.record", "record ROS 2 topics to a rosbag2 file"),
    "train": ("sdpr_loc.training.train_cli", "train or fine-tune the keypoint network from rosbags"),
    "build-map": ("sdpr_loc.evaluation.build_map_cli", "keyframe map of a teach drive"),
    "eval": ("sdpr_loc.evaluation.eval_cli", "localize a repeat drive against a map; table, CSV, PNG"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdpr-loc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"sdpr-loc {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
