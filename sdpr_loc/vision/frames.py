"""Live frames that know how to match a keyframe: what :class:`~sdpr_loc.vision.tracker.Tracker` localizes.

A live frame gives the tracker correspondences with a keyframe: live 3D points (and their
covariances) paired with keyframe keypoints. Two kinds, one interface:

* :class:`KeypointFrame`: the frame's own stereo keypoints (ORB, or the network's), matched to the
  keyframe's by mutual nearest-neighbour descriptors with the ratio test;
* :class:`~sdpr_loc.vision.dense.DenseFrame`: the keyframe's keypoints searched in the live
  frame's dense descriptors (as the network was trained); guided by a :class:`PosePrior` when
  there is one (:func:`search_windows`), exhaustive when there is none.

Both expose ``keypoints`` (the frame's own :class:`StereoKeypoints`: a new keyframe),
``place_descriptors`` (what it votes for map keyframes with: place recognition),
``descriptor_dim``, ``correspond(keyframe, prior, same_drive)`` and ``precompute(same_drive)``
(the per-frame work that needs no keyframe, for a caller that does it ahead: a node's front stage).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sdpr_loc.geometry.se3 import hat_np
from sdpr_loc.geometry.stereo import StereoCamera

from .keypoints import StereoKeypoints
from .pipeline import LocalizerConfig

__all__ = ["Keyframe", "Correspondences", "Guide", "PosePrior", "KeypointFrame", "covariances", "usable",
           "camera_of", "search_windows"]


@dataclass
class Keyframe:
    """Keypoints of a keyframe in its own optical frame, and its pose.

    T (4, 4): T_parent_keyframe; cov (6, 6): left-perturbation covariance of T (parent frame);
    points (M, 3) float64; sigma (M, 3, 3) covariances; descriptors (M, D) float32 unit vectors;
    index: the map's keyframe index (-1: an odometry keyframe); camera: the stereo camera that
    triangulated the points (recovered from them; None if they do not determine it).
    """

    T: np.ndarray
    cov: np.ndarray
    points: np.ndarray
    sigma: np.ndarray
    descriptors: torch.Tensor
    index: int = -1
    camera: StereoCamera | None = None

    @classmethod
    def from_keypoints(cls, kp: StereoKeypoints, T: np.ndarray, cov: np.ndarray | None = None,
                       index: int = -1) -> "Keyframe":
        P, sigma, _, desc = usable(kp)
        return cls(np.asarray(T, dtype=np.float64), np.zeros((6, 6)) if cov is None else cov, P, sigma,
                   desc[0], index, camera_of(kp))


@dataclass
class Correspondences:
    """Live points ``src (N, 3)`` with covariances ``S_src (N, 3, 3)`` matched to keyframe points
    ``index (N,)``; ``searched``: how many live (keypoint frames) or keyframe (dense) keypoints
    took part; ``camera``: the live stereo camera (None: unknown)."""

    src: np.ndarray
    S_src: np.ndarray
    index: np.ndarray
    searched: int
    camera: StereoCamera | None = None


@dataclass
class Guide:
    """Where to search: predicted pixel ``uv (M, 2)`` of each keypoint and the window half-size
    ``radius (M,)`` (pixels); ``inside (M,)`` False for keypoints predicted outside the image or
    behind the camera (not searched)."""

    uv: np.ndarray
    radius: np.ndarray
    inside: np.ndarray


@dataclass
class PosePrior:
    """Predicted ``T_cam_kf (4, 4)`` (keyframe points -> live camera) and the covariance
    ``cov (6, 6)`` of its error, a left perturbation in the live camera frame ordered
    (translation, rotation)."""

    T_cam_kf: np.ndarray
    cov: np.ndarray
    n_sigma: float = 3.0
    min_radius: int = 3
    max_radius: int = 8


def covariances(Wm: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Covariances (N, 3, 3) from inverse covariances ``Wm`` where ``ok`` and positive definite;
    returns them (zeros elsewhere) and the narrowed mask."""
    ok = ok & np.isfinite(Wm).reshape(len(ok), 9).all(1)
    sigma = np.zeros_like(Wm)
    if ok.any():
        Ws = 0.5 * (Wm[ok] + Wm[ok].transpose(0, 2, 1))
        ev = np.linalg.eigvalsh(Ws)
        pd = ev[:, 0] > 1e-12 * np.maximum(ev[:, -1], 1e-300)
        idx = np.flatnonzero(ok)
        ok[idx[~pd]] = False
        if pd.any():
            sigma[idx[pd]] = np.linalg.inv(Ws[pd])
    return sigma, ok


def camera_of(kp: StereoKeypoints) -> StereoCamera | None:
    """The camera that triangulated ``kp``'s valid points (B = 1), or None if they do not
    determine it (:meth:`StereoCamera.from_triangulation`)."""
    v = kp.valid[0].cpu().numpy().astype(bool)
    uvd = torch.cat([kp.uv[0], kp.disparity[0, :, None]], -1).detach().cpu().numpy()[v]
    try:
        return StereoCamera.from_triangulation(uvd, kp.points[0].detach().cpu().numpy()[v])
    except ValueError:
        return None


def usable(kp: StereoKeypoints) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
    """Valid, finite points in front of the camera with positive definite information:
    (P (N, 3), Sigma (N, 3, 3), mask (K,), descriptors (1, N, D))."""
    v = kp.valid[0].cpu().numpy().astype(bool)
    P = kp.points[0].detach().cpu().numpy().astype(np.float64)
    Wm = kp.inv_cov[0].detach().cpu().numpy().astype(np.float64)
    ok = v & np.isfinite(P).all(1) & (P[:, 2] > 0)
    sigma, ok = covariances(Wm, ok)
    desc = kp.descriptors[:, torch.from_numpy(ok)].detach().to(torch.float32)
    return P[ok], sigma[ok], ok, desc


class KeypointFrame:
    """A frame's stereo keypoints (B = 1), matched to keyframes by descriptor nearest neighbours."""

    def __init__(self, keypoints: StereoKeypoints, config: LocalizerConfig | None = None):
        self.keypoints = keypoints
        self.config = config or LocalizerConfig()
        self.points, self.sigma, _, self.descriptors = usable(keypoints)
        self.camera = camera_of(keypoints)

    @property
    def descriptor_dim(self) -> int:
        return int(self.keypoints.descriptors.shape[-1])

    @property
    def place_descriptors(self) -> torch.Tensor:
        """``(N, D)`` descriptors of the valid keypoints (place recognition)."""
        return self.keypoints.descriptors[0][self.keypoints.valid[0]]

    def precompute(self, same_drive: bool = False) -> None:
        """Nothing left to do ahead: the keypoints are the frame."""

    def correspond(self, kf: Keyframe, prior: PosePrior | None = None, same_drive: bool = False) -> Correspondences:
        """Mutual nearest neighbours with the ratio test (``prior`` and ``same_drive`` are not used)."""
        from .matching import hard_match

        n = len(self.points)
        if n == 0 or len(kf.points) == 0:
            return Correspondences(np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros(0, dtype=np.int64), n)
        idx, matched, _ = hard_match(self.descriptors, kf.descriptors[None], ratio=self.config.ratio,
                                     min_similarity=self.config.min_similarity)
        m = matched[0].numpy()
        return Correspondences(self.points[m], self.sigma[m], idx[0].numpy()[m], n, self.camera)


def search_windows(points: np.ndarray, prior: PosePrior, camera, size: tuple[int, int]):
    """Where keyframe ``points (M, 3)`` should appear in a live image of ``size (H, W)`` under ``prior``.

    Each point is moved by ``prior.T_cam_kf`` and projected; the prior's pose covariance goes
    to the pixel through the projection's Jacobian (J_pix J_pose cov J_pose^T J_pix^T), and the
    window's half-size is ``prior.n_sigma`` times its largest standard deviation plus one pixel
    of matching noise, within [``prior.min_radius``, ``prior.max_radius``]. Returns a
    :class:`Guide`.
    """
    T = np.asarray(prior.T_cam_kf, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]
    z = p[:, 2]
    front = z > 1e-3
    zs = np.where(front, z, 1.0)
    uv = np.stack([camera.fx * p[:, 0] / zs + camera.cx, camera.fy * p[:, 1] / zs + camera.cy], -1)
    # d p / d (rho, phi) = [I, -[p]x];  d uv / d p
    Jp = np.zeros((len(p), 3, 6))
    Jp[:, :, :3] = np.eye(3)
    Jp[:, :, 3:] = -hat_np(p)
    x, y = p[:, 0], p[:, 1]
    Ju = np.zeros((len(p), 2, 3))
    Ju[:, 0, 0] = camera.fx / zs
    Ju[:, 1, 1] = camera.fy / zs
    Ju[:, 0, 2] = -camera.fx * x / zs ** 2
    Ju[:, 1, 2] = -camera.fy * y / zs ** 2
    J = Ju @ Jp
    S = J @ np.asarray(prior.cov, dtype=np.float64) @ J.transpose(0, 2, 1)
    sd = np.sqrt(np.maximum(np.linalg.eigvalsh(S)[:, -1], 0.0))
    radius = np.clip(np.ceil(prior.n_sigma * sd + 1.0), prior.min_radius, prior.max_radius).astype(np.int64)
    H, W = size
    inside = front & np.isfinite(uv).all(1)
    inside &= (uv[:, 0] > -0.5) & (uv[:, 0] < W - 0.5) & (uv[:, 1] > -0.5) & (uv[:, 1] < H - 0.5)
    return Guide(uv=np.where(inside[:, None], uv, 0.0), radius=radius, inside=inside)
