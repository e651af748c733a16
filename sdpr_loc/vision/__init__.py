"""Learned stereo keypoints and the differentiable localization pipeline.

``KeypointNet`` (UNet: detector, scores, descriptors), matching (soft / hard / stereo),
``Localizer`` (stereo pair -> T_target_source with a certificate) and ``extract_keypoints``
(what the ROS keypoint node publishes as ``StereoKeypoints``).
"""
from .keypoints import StereoKeypoints
from .matching import hard_match, soft_match, stereo_match, stereo_points
from .network import KeypointNet, NetworkConfig
from .pipeline import Localization, Localizer, LocalizerConfig, extract_keypoints

__all__ = ["StereoKeypoints", "KeypointNet", "NetworkConfig", "Localizer", "LocalizerConfig",
           "Localization", "extract_keypoints", "hard_match", "soft_match", "stereo_match",
           "stereo_points"]
