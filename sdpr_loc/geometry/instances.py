"""Synthetic stereo registration problems with ground truth, for tests, benchmarks and examples."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .se3 import so3_exp
from .stereo import StereoCamera

Tensor = torch.Tensor


@dataclass
class RegistrationInstance:
    """Matched noisy points src/trg (B, N, 3), weights (B, N), inv_cov (B, N, 3, 3), truth R, t."""

    src: Tensor
    trg: Tensor
    weights: Tensor
    inv_cov: Tensor
    R: Tensor
    t: Tensor


def stereo_instance(B: int, N: int, sigma_px: float = 0.5, seed: int = 0, offset=(0.0, 0.0, 0.0),
                    camera: StereoCamera | None = None, motion: float = 0.2) -> RegistrationInstance:
    """Points 2-20 m in front of a stereo camera, seen from two poses, noise drawn in pixel space.

    Each end is triangulated from noisy (u_l, v, u_r); the matrix weights are the target's inverse
    covariances (first order). ``offset`` shifts both clouds (to test far-from-origin data).
    """
    g = torch.Generator().manual_seed(seed)
    cam = camera or StereoCamera(fx=400.0, fy=400.0, cx=320.0, cy=240.0, baseline=0.24)
    f64 = dict(generator=g, dtype=torch.float64)
    depth = 2 + 18 * torch.rand(B, N, **f64)
    uv = torch.rand(B, N, 2, **f64) * torch.tensor([2 * cam.cx, 2 * cam.cy], dtype=torch.float64)
    src_true, _ = cam.triangulate(torch.cat([uv, (cam.fx * cam.baseline / depth).unsqueeze(-1)], -1))
    R = so3_exp(motion * torch.randn(B, 3, **f64))
    t = 2.5 * motion * torch.randn(B, 3, **f64)
    trg_true = src_true @ R.transpose(1, 2) + t.unsqueeze(1)

    def observe(P):
        uvd = cam.project(P)
        n = sigma_px * torch.randn(*uvd.shape, **f64)
        ul, v, ur = uvd[..., 0] + n[..., 0], uvd[..., 1] + n[..., 1], uvd[..., 0] - uvd[..., 2] + n[..., 2]
        uvd_n = torch.stack([ul, v, ul - ur], -1)
        P_n, valid = cam.triangulate(uvd_n)
        W, _ = cam.inverse_covariance(uvd_n, sigma_px)
        return P_n, W, valid

    src, _, vs = observe(src_true)
    trg, Wt, vt = observe(trg_true)
    off = torch.tensor(offset, dtype=torch.float64)
    return RegistrationInstance(src=src + off, trg=trg + off, weights=(vs & vt).double(), inv_cov=Wt,
                                R=R, t=t - (R @ off) + off)
