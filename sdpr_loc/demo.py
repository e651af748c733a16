"""`sdpr-loc demo`: the main job (for now the paper's first example; the ROS pipeline replaces it)."""
from __future__ import annotations

import argparse

from sdpr_loc.examples import polymin_fit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    polymin_fit.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return polymin_fit.run(args)
