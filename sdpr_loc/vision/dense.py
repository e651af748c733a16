"""Map keypoints matched against a live frame's dense descriptors: how the network was trained.

Training soft-matches one frame's keypoints against every pixel of the other frame
(:func:`~sdpr_loc.vision.matching.soft_match`, with ``keypoints_from = keyframe``: the
keyframe's keypoints against the live frame). Matching keypoint to keypoint instead needs the
detector to fire at the same 3D points in both frames, which nothing trains. :class:`DenseFrame`
deploys the trained task: each stored map keypoint finds its best pixel in the live left image
(ratio test against the best pixel outside a small radius, sub-pixel soft-argmax around the
peak), then its disparity in the live right image, then its 3D point and inverse covariance in
the live camera, ready for RANSAC and the certified registration.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .keypoints import StereoKeypoints
from .matching import as_cameras, stereo_match, stereo_points
from .network import KeypointNet
from .pipeline import LocalizerConfig, _as_image_batch, _keypoints

Tensor = torch.Tensor

__all__ = ["DenseFrame", "DenseMatches"]


@dataclass
class DenseMatches:
    """For M map keypoints: live pixel ``uv (M, 2)``, live 3D point ``points (M, 3)`` and
    ``inv_cov (M, 3, 3)`` (float64), descriptor cosine ``similarity (M,)`` and ``valid (M,)``
    (passed the ratio test and found a disparity)."""

    uv: np.ndarray
    points: np.ndarray
    inv_cov: np.ndarray
    similarity: np.ndarray
    valid: np.ndarray


class DenseFrame:
    """A live stereo frame run through the network once, matched against any number of keyframes.

    ``keypoints`` (B = 1, on CPU) are the frame's own stereo keypoints, computed on first use
    (place recognition when tracking is lost; not needed while tracking). ratio: Lowe's test on descriptor distances between the
    best pixel and the best pixel farther than ``radius`` pixels from it. window: +- pixels of
    the sub-pixel soft-argmax around the peak.
    """

    def __init__(self, network: KeypointNet, left, right, camera, config: LocalizerConfig | None = None,
                 ratio: float = 0.9, radius: int = 4, window: int = 2):
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if radius < 1 or window < 1:
            raise ValueError(f"radius and window must be >= 1, got {radius}, {window}")
        self.network, self.config = network, config or LocalizerConfig()
        self.ratio, self.radius, self.window = float(ratio), int(radius), int(window)
        device = next(network.parameters()).device
        lt = _as_image_batch(left, device, "left")
        rt = _as_image_batch(right, device, "right")
        if lt.shape != rt.shape or lt.shape[0] != 1:
            raise ValueError(f"need one left and one right image of one shape, got {tuple(lt.shape)} "
                             f"and {tuple(rt.shape)}")
        self.cameras = as_cameras(camera, 1)
        with torch.inference_mode():
            self.left, self.right = network(lt), network.encode(rt)
            self.dense = network.dense_descriptors(self.left)[0]          # (D, H, W)

    @cached_property
    def keypoints(self) -> StereoKeypoints:
        with torch.inference_mode():
            return _keypoints(self.network, self.left, self.right, self.cameras, self.config).detach().to("cpu")

    @property
    def descriptor_dim(self) -> int:
        return int(self.dense.shape[0])

    MAX_CORRELATIONS = 1 << 24  # correlation entries held at once by match()

    def _peaks(self, descriptors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Best pixel of each of m descriptors (m, D): cosine ``best (m,)``, ``unique (m,)`` (ratio
        test) and sub-pixel ``uv (m, 2)``."""
        D, H, W = self.dense.shape
        M, dev = descriptors.shape[0], self.dense.device
        corr = descriptors.to(dev, self.dense.dtype) @ self.dense.reshape(D, H * W)   # (m, HW)
        best, arg = corr.max(-1)
        bu, bv = arg % W, torch.div(arg, W, rounding_mode="floor")
        # second best: the best pixel outside the peak's (2 radius + 1)^2 neighbourhood
        r = torch.arange(-self.radius, self.radius + 1, device=dev)
        nu = (bu[:, None, None] + r[None, None, :]).clamp(0, W - 1)
        nv = (bv[:, None, None] + r[None, :, None]).clamp(0, H - 1)
        second = corr.scatter(1, (nv * W + nu).reshape(M, -1), -2.0).max(-1).values
        dist = lambda s: torch.sqrt((2 - 2 * s).clamp_min(0))  # noqa: E731 (unit vectors)
        unique = dist(best) < self.ratio * dist(second)
        # sub-pixel: soft-argmax (the training temperature) over the peak's window
        w = torch.arange(-self.window, self.window + 1, device=dev)
        U = (bu[:, None, None] + w[None, None, :]).clamp(0, W - 1).expand(-1, len(w), -1)
        V = (bv[:, None, None] + w[None, :, None]).clamp(0, H - 1).expand(-1, -1, len(w))
        lin = (V * W + U).reshape(M, -1)
        p = torch.softmax(corr.gather(1, lin) / self.config.match_temperature, -1)
        uv = torch.stack([(p * U.reshape(M, -1)).sum(-1), (p * V.reshape(M, -1)).sum(-1)], -1)
        return best, unique, uv

    def match(self, descriptors: Tensor) -> DenseMatches:
        """Live correspondences of map keypoints with unit ``descriptors (M, D)``."""
        D, H, W = self.dense.shape
        if descriptors.dim() != 2 or descriptors.shape[1] != D:
            raise ValueError(f"descriptors must be (M, {D}), got {tuple(descriptors.shape)}")
        M = descriptors.shape[0]
        if M == 0:
            z = np.zeros
            return DenseMatches(z((0, 2)), z((0, 3)), z((0, 3, 3)), z(0), z(0, dtype=bool))
        cfg = self.config
        with torch.inference_mode():
            # (chunk, H W) correlations at a time: (M, H W) at once would be gigabytes at 1242x375
            step = max(1, self.MAX_CORRELATIONS // (H * W))
            parts = [self._peaks(descriptors[i:i + step]) for i in range(0, M, step)]
            best, unique, uv = (torch.cat(x) for x in zip(*parts))
            uv = uv[None].float()
            st = stereo_match(self.network, self.left, uv, self.right, int(cfg.max_disparity),
                              cfg.stereo_temperature, int(cfg.disparity_window), cfg.min_stereo_similarity,
                              int(cfg.stereo_levels))
            P, Wm, ok = stereo_points(self.cameras, uv, st.disparity, cfg.sigma_px)
            valid = unique & ok[0] & st.valid[0]
        np_ = lambda x: x.detach().cpu().numpy()  # noqa: E731
        return DenseMatches(uv=np_(uv[0]).astype(np.float64), points=np_(P[0]), inv_cov=np_(Wm[0]),
                            similarity=np_(best).astype(np.float64), valid=np_(valid).astype(bool))
