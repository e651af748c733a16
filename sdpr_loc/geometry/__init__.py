"""Geometry: SE(3) maps, the stereo camera model, and certified registration."""
from .calibration import calibrate_stereo
from .registration import Registration, register, ransac
from .stereo import StereoCamera, stereo_points

__all__ = ["Registration", "register", "ransac", "StereoCamera", "stereo_points", "calibrate_stereo"]
