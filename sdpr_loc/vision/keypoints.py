"""What the keypoint front end hands to registration: stereo keypoints of one frame, batched.

The network and stereo matching (``sdpr_loc.vision.network`` / ``matching``) produce it; the
registration node and the localization pipeline consume it; ``sdpr_loc.nodes`` packs it into a
sensor_msgs/PointCloud2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass
class StereoKeypoints:
    """Keypoints of the LEFT image with their stereo-triangulated 3D points, per frame.

    Shapes (B frames, K keypoints each, D descriptor length):
        uv (B, K, 2): pixel coordinates in the left rectified image.
        disparity (B, K): u_left - u_right in pixels (sub-pixel).
        points (B, K, 3): 3D points in the left camera optical frame (x right, y down, z forward).
        inv_cov (B, K, 3, 3): inverse covariances of the points (zeros where invalid).
        scores (B, K): detector confidence in [0, 1].
        descriptors (B, K, D): unit-norm descriptors.
        valid (B, K) bool: finite point with usable disparity.
    """

    uv: Tensor
    disparity: Tensor
    points: Tensor
    inv_cov: Tensor
    scores: Tensor
    descriptors: Tensor
    valid: Tensor

    def __len__(self) -> int:
        return self.uv.shape[0]

    def to(self, device) -> "StereoKeypoints":
        return StereoKeypoints(**{k: v.to(device) for k, v in self.__dict__.items()})

    def select(self, b: int) -> "StereoKeypoints":
        """Frame b, keeping a batch dimension of 1."""
        return StereoKeypoints(**{k: v[b:b + 1] for k, v in self.__dict__.items()})

    def detach(self) -> "StereoKeypoints":
        return StereoKeypoints(**{k: v.detach() for k, v in self.__dict__.items()})
