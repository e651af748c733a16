"""Teach-and-repeat evaluation: localize a repeat drive against a keyframe map, per method."""
from .localize import METHODS, FrameResult, run_method
from .report import summarize

__all__ = ["METHODS", "FrameResult", "run_method", "summarize"]
