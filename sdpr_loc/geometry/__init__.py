"""Geometry: SE(3) maps, the stereo camera model, and certified registration."""
from .registration import Registration, register, ransac
from .stereo import StereoCamera

__all__ = ["Registration", "register", "ransac", "StereoCamera"]
