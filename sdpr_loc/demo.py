"""`sdpr-loc demo` (what `make demo` runs): night localization against a day map, over DDS.

Renders a day teach drive and a night repeat drive of a synthetic town, builds the keyframe map with
the packaged keypoint model, starts the keypoint and registration nodes as separate ROS 2 processes,
plays the night drive, records the certified poses, and prints a summary with a trajectory PNG.
The paper's polynomial example is `sdpr-loc polymin-fit`.
"""
from __future__ import annotations

import argparse

from sdpr_loc.nodes import demo as ros_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ros_demo.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.model:  # a bad --model fails now (one line, exit 2), not after the drives are rendered
        from sdpr_loc.vision.frontend import load_model

        load_model(args.model, device="cpu")
    return ros_demo.run(args)
