"""Classical stereo front end: ORB keypoints on the left image, row search in the right one.

The learned front end (``sdpr_loc.vision.network``) is measured against this baseline, and the
keypoint node runs it with ``frontend: orb`` where no trained model is at hand. It produces the
same :class:`~sdpr_loc.vision.keypoints.StereoKeypoints` bundle as the network:

* ORB (FAST corners + rBRIEF) on the left rectified image;
* the right correspondence on the same row by zero-mean normalised cross-correlation (NCC) of a
  small patch over the disparity range, accepted only when the best match is strong and unique,
  refined to sub-pixel disparity by a parabola through the NCC peak;
* 3D points and 3x3 inverse covariances from :class:`~sdpr_loc.geometry.stereo.StereoCamera`;
* the 256-bit binary descriptor unpacked to +-1 and divided by 16, so it has unit norm and the
  dot product of two descriptors is ``1 - 2 * hamming / 256``.
"""
from __future__ import annotations

import numpy as np
import torch

from sdpr_loc.geometry.stereo import StereoCamera

from .keypoints import StereoKeypoints

__all__ = ["orb_keypoints", "match_along_rows", "DESCRIPTOR_DIM"]

DESCRIPTOR_DIM = 256


def as_uint8(img: np.ndarray, name: str) -> np.ndarray:
    """Gray (H, W) image as uint8 for OpenCV (floats in [0, 1] are scaled); ValueError naming ``name``."""
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) gray image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    if img.dtype.kind != "f":
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got {img.dtype}")
    return np.clip(np.nan_to_num(img, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def match_along_rows(left: np.ndarray, right: np.ndarray, u: np.ndarray, v: np.ndarray,
                     max_disparity: int = 64, half: int = 4, min_ncc: float = 0.8,
                     uniqueness: float = 0.15, min_std: float = 2.0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel disparity of left pixels ``(u, v)`` (int arrays (K,)) by NCC row search.

    A (2 half + 1)^2 patch around each left pixel is compared with right patches at
    ``u - d, d = 0..max_disparity``. Accepted when the best NCC >= ``min_ncc``, the best
    dissimilarity (1 - NCC) beats every candidate more than 2 px away by the factor
    ``1 + uniqueness`` (repetitive texture fails this), the left patch has grey-level std >=
    ``min_std`` (in 0..255 units) and the peak is not on the search boundary.
    Returns ``disparity (K,) float``, ``ncc (K,)``, ``ok (K,) bool``.
    """
    K = u.shape[0]
    H, W = left.shape
    if K == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    off = np.arange(-half, half + 1)
    d = np.arange(max_disparity + 1)
    L = left.astype(np.float32)
    R = right.astype(np.float32)
    rows = np.clip(v[:, None] + off[None, :], 0, H - 1)                      # (K, p)
    lcols = np.clip(u[:, None] + off[None, :], 0, W - 1)
    lp = L[rows[:, :, None], lcols[:, None, :]].reshape(K, -1)              # (K, P)
    lp = lp - lp.mean(1, keepdims=True)
    lstd = np.sqrt((lp ** 2).mean(1))
    rc = u[:, None, None] - d[None, :, None] + off[None, None, :]            # (K, Dn, p)
    inside = (rc.min(-1) >= 0) & (rc.max(-1) < W)                           # (K, Dn)
    rp = R[rows[:, None, :, None], np.clip(rc, 0, W - 1)[:, :, None, :]]     # (K, Dn, p, p)
    rp = rp.reshape(K, d.size, -1)
    rp = rp - rp.mean(-1, keepdims=True)
    num = np.einsum("kp,kdp->kd", lp, rp)
    den = np.sqrt((lp ** 2).sum(1))[:, None] * np.sqrt((rp ** 2).sum(-1))
    ncc = np.where(inside & (den > 1e-6), num / np.maximum(den, 1e-6), -1.0)
    best = ncc.argmax(1)
    c0 = ncc[np.arange(K), best]
    far = np.abs(d[None, :] - best[:, None]) > 2
    second = np.where(far, ncc, -1.0).max(1)
    unique = (1.0 - second) >= (1.0 - c0) * (1.0 + uniqueness)
    interior = (best > 0) & (best < d.size - 1) & inside[np.arange(K), np.minimum(best + 1, d.size - 1)]
    ok = (c0 >= min_ncc) & unique & (lstd >= min_std) & interior
    bm, bp = np.clip(best - 1, 0, d.size - 1), np.clip(best + 1, 0, d.size - 1)
    cm, cp = ncc[np.arange(K), bm], ncc[np.arange(K), bp]
    curv = cm - 2 * c0 + cp
    delta = np.where(curv < -1e-9, 0.5 * (cm - cp) / np.where(curv < -1e-9, curv, -1.0), 0.0)
    ok &= np.abs(delta) <= 1.0
    return best + np.clip(delta, -0.5, 0.5), c0, ok


def orb_keypoints(left: np.ndarray, right: np.ndarray, camera: StereoCamera,
                  n_features: int = 500, max_disparity: int | None = None, sigma_px: float = 0.5,
                  min_ncc: float = 0.8, fast_threshold: int = 10, n_levels: int = 4
                  ) -> StereoKeypoints:
    """ORB stereo keypoints of one rectified pair, as a batch of one frame.

    Args:
        left, right: (H, W) gray, float in [0, 1] or uint8, rectified.
        camera: the rectified pair (triangulation and covariances).
        n_features: ORB keypoint budget (K <= n_features).
        max_disparity: row search range in pixels (default: width / 4).
        sigma_px: pixel noise std for the point covariances.
        min_ncc: right-match acceptance threshold (see :func:`match_along_rows`).
    Returns:
        StereoKeypoints with B = 1, K detected keypoints (K may be 0), D = 256, float32;
        ``valid`` marks keypoints with an accepted right match and usable disparity.
    """
    import cv2

    L, R = as_uint8(left, "left"), as_uint8(right, "right")
    if L.shape != R.shape:
        raise ValueError(f"left {L.shape} and right {R.shape} images differ in size")
    H, W = L.shape
    if max_disparity is None:
        max_disparity = max(8, W // 4)
    orb = cv2.ORB_create(nfeatures=int(n_features), scaleFactor=1.2, nlevels=int(n_levels),
                         edgeThreshold=15, patchSize=15, fastThreshold=int(fast_threshold))
    kps, desc = orb.detectAndCompute(L, None)
    K = 0 if desc is None else len(kps)
    if K == 0:
        return _empty()
    pts = np.array([kp.pt for kp in kps], dtype=np.float64)
    u = np.rint(pts[:, 0]).astype(np.int64).clip(0, W - 1)
    v = np.rint(pts[:, 1]).astype(np.int64).clip(0, H - 1)
    disp, _, ok = match_along_rows(L, R, u, v, max_disparity=int(max_disparity),
                                   min_ncc=min_ncc)
    response = np.array([kp.response for kp in kps], dtype=np.float64)
    scores = np.clip(response / max(response.max(), 1e-12), 0.0, 1.0)
    bits = np.unpackbits(desc, axis=1).astype(np.float32)
    descriptors = (2.0 * bits - 1.0) / np.float32(np.sqrt(DESCRIPTOR_DIM))

    uvd = torch.from_numpy(np.stack([u, v, np.where(ok, disp, 0.0)], 1)).to(torch.float64)
    points, valid = camera.triangulate(uvd)
    inv_cov, _ = camera.inverse_covariance(uvd, sigma_px)
    valid = valid & torch.from_numpy(ok)
    f32 = dict(dtype=torch.float32)
    return StereoKeypoints(
        uv=uvd[None, :, :2].to(**f32), disparity=uvd[None, :, 2].to(**f32),
        points=torch.where(valid[:, None], points, 0.0)[None].to(**f32),
        inv_cov=torch.where(valid[:, None, None], inv_cov, 0.0)[None].to(**f32),
        scores=torch.from_numpy(scores)[None].to(**f32),
        descriptors=torch.from_numpy(descriptors)[None], valid=valid[None])


def _empty(D: int = DESCRIPTOR_DIM) -> StereoKeypoints:
    z = torch.zeros
    return StereoKeypoints(uv=z(1, 0, 2), disparity=z(1, 0), points=z(1, 0, 3), inv_cov=z(1, 0, 3, 3),
                           scores=z(1, 0), descriptors=z(1, 0, D), valid=z(1, 0, dtype=torch.bool))
