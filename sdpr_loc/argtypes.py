"""argparse types of the ``sdpr-loc`` commands: a number out of range is a usage error that names
the option (exit status 2) before anything runs, not a traceback from deep inside nor a run that
silently does something odd (a negative keyframe spacing, a negative noise level)."""
from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["positive", "nonnegative", "unit_interval"]


def _checked(kind: type, ok: Callable[[float], bool], what: str) -> Callable[[str], int | float]:
    def parse(text: str):
        v = kind(text)          # ValueError: argparse says "invalid int value: 'x'"
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return v

    parse.__name__ = kind.__name__   # argparse names the type in "invalid int value"
    return parse


def positive(kind: type) -> Callable[[str], int | float]:
    """A finite ``kind`` (int or float) > 0."""
    return _checked(kind, lambda v: v > 0, "positive")


def nonnegative(kind: type) -> Callable[[str], int | float]:
    """A finite ``kind`` (int or float) >= 0."""
    return _checked(kind, lambda v: v >= 0, "zero or more")


unit_interval = _checked(float, lambda v: 0 < v <= 1, "in (0, 1]")   # a resize factor
