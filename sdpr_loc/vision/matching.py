"""Descriptor matching: soft (training), hard (inference) and stereo (disparity along the row).

* :func:`soft_match`: each source descriptor against every target pixel; a softmax over the
  correlation gives a pseudo-point (expected pixel), its expected similarity and score.
  Everything is differentiable, so the pose loss reaches the descriptors of both images.
* :func:`hard_match`: mutual nearest neighbours with a ratio test, between two keypoint sets
  (what a deployed system does against a map keyframe).
* :func:`stereo_match`: left descriptors against the right image's descriptors along the same
  row of the rectified pair, then a soft-argmax in a small window around the best integer
  disparity: sub-pixel and differentiable, without the bias a global soft-argmax suffers from
  a second peak far away.
* :func:`stereo_points`: disparities -> 3D points and 3x3 inverse covariances (float64) through
  :class:`~sdpr_loc.geometry.stereo.StereoCamera`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from sdpr_loc.geometry.stereo import StereoCamera

from .network import KeypointNet, NetOutput

Tensor = torch.Tensor

__all__ = ["SoftMatch", "StereoMatch", "soft_match", "hard_match", "stereo_match",
           "stereo_points", "as_cameras"]


@dataclass
class SoftMatch:
    """uv (B, K, 2) pseudo-points in the target image; similarity (B, K) expected correlation
    under the match distribution (high only for a confident match to a similar descriptor);
    score (B, K) expected target score; logits (B, K, H*W) correlation / temperature (row-major
    pixels: what a supervised descriptor loss scores)."""

    uv: Tensor
    similarity: Tensor
    score: Tensor
    logits: Tensor


@dataclass
class StereoMatch:
    """disparity (B, K) pixels (u_left - u_right); similarity (B, K) peak correlation;
    valid (B, K): peak inside the search range and similar enough."""

    disparity: Tensor
    similarity: Tensor
    valid: Tensor


def _check_desc(name: str, d: Tensor) -> None:
    if not isinstance(d, torch.Tensor) or d.dim() != 3:
        shape = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
        raise ValueError(f"{name} must have shape (B, K, D), got {shape}")


def soft_match(desc: Tensor, dense: Tensor, scores: Tensor, temperature: float) -> SoftMatch:
    """Softmax matching of ``desc (B, K, D)`` against every pixel of ``dense (B, D, H, W)``.

    scores (B, 1, H, W): target score map, averaged under the match distribution.
    temperature: softmax temperature on the cosine correlation (smaller = sharper).
    """
    _check_desc("desc", desc)
    if dense.dim() != 4 or dense.shape[:2] != (desc.shape[0], desc.shape[2]):
        raise ValueError(f"dense must have shape (B, D, H, W) = ({desc.shape[0]}, {desc.shape[2]}, H, W), "
                         f"got {tuple(dense.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    B, D, H, W = dense.shape
    flat = dense.reshape(B, D, H * W)
    corr = torch.bmm(desc, flat)                                       # (B, K, HW)
    logits = corr / temperature
    prob = torch.softmax(logits, -1)
    v, u = torch.meshgrid(torch.arange(H, dtype=desc.dtype, device=desc.device),
                          torch.arange(W, dtype=desc.dtype, device=desc.device), indexing="ij")
    grid = torch.stack([u.reshape(-1), v.reshape(-1)], -1)              # (HW, 2)
    uv = prob @ grid
    sim = (prob * corr).sum(-1)
    score = torch.bmm(prob, scores.reshape(B, H * W, 1)).squeeze(-1)
    return SoftMatch(uv=uv, similarity=sim, score=score, logits=logits)


def hard_match(desc_a: Tensor, desc_b: Tensor, valid_a: Tensor | None = None,
               valid_b: Tensor | None = None, ratio: float = 0.95,
               min_similarity: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Mutual nearest neighbours of unit descriptors ``desc_a (B, K, D)`` in ``desc_b (B, M, D)``.

    A match also passes Lowe's ratio test on descriptor distances (best < ratio * second best)
    and a minimum cosine similarity. Returns ``idx (B, K)`` into b (0 where unmatched),
    ``matched (B, K)`` bool and the cosine ``similarity (B, K)`` of the match.
    """
    _check_desc("desc_a", desc_a)
    _check_desc("desc_b", desc_b)
    if desc_a.shape[0] != desc_b.shape[0] or desc_a.shape[2] != desc_b.shape[2]:
        raise ValueError(f"desc_a {tuple(desc_a.shape)} and desc_b {tuple(desc_b.shape)} must "
                         "agree on batch size and descriptor length")
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    B, K, _ = desc_a.shape
    M = desc_b.shape[1]
    va = torch.ones(B, K, dtype=torch.bool, device=desc_a.device) if valid_a is None else valid_a
    vb = torch.ones(B, M, dtype=torch.bool, device=desc_a.device) if valid_b is None else valid_b
    sim = torch.bmm(desc_a, desc_b.transpose(1, 2))
    sim = sim.masked_fill(~(va.unsqueeze(2) & vb.unsqueeze(1)), -2.0)
    if M < 1:
        z = torch.zeros(B, K, dtype=torch.long, device=desc_a.device)
        return z, torch.zeros_like(va), desc_a.new_zeros(B, K)
    top = sim.topk(min(2, M), dim=-1)
    best, idx = top.values[..., 0], top.indices[..., 0]
    back = sim.argmax(1)                                               # (B, M): best a for each b
    mutual = back.gather(1, idx) == torch.arange(K, device=desc_a.device)
    dist = lambda s: torch.sqrt((2 - 2 * s).clamp_min(0))  # noqa: E731 (unit vectors)
    if M > 1:
        second = top.values[..., 1]
        passes = (dist(best) < ratio * dist(second)) | (second <= -2)
    else:
        passes = torch.ones_like(mutual)
    matched = mutual & passes & (best >= min_similarity) & va & (best > -2)
    return idx, matched, best


def stereo_match(network: KeypointNet, left: NetOutput, uv: Tensor, right: NetOutput,
                 max_disparity: int, temperature: float, window: int = 2,
                 min_similarity: float = 0.0, levels: int | None = None) -> StereoMatch:
    """Disparity of left-image pixels ``uv (B, K, 2)`` (keypoints or pseudo-points).

    Descriptors of the finest ``levels`` encoder levels (None: all) at ``uv`` in ``left`` are
    correlated with the right image's (``right``, encoder levels) at ``(u - d, v)`` for integer
    ``d`` in ``[0, max_disparity)``; the best ``d`` must lie strictly inside the range and
    inside the image, then a softmax (``temperature``) over ``best +- window`` gives the
    sub-pixel disparity. Differentiable w.r.t. both images' features and ``uv``.
    """
    if not isinstance(uv, torch.Tensor) or uv.dim() != 3 or uv.shape[-1] != 2:
        raise ValueError(f"uv must have shape (B, K, 2), got {tuple(uv.shape) if isinstance(uv, torch.Tensor) else uv}")
    if not isinstance(max_disparity, int) or max_disparity < 3:
        raise ValueError(f"max_disparity must be an int >= 3, got {max_disparity!r}")
    if not temperature > 0 or window < 1:
        raise ValueError("temperature must be positive and window >= 1")
    B, K, _ = uv.shape
    n = max_disparity
    desc = network.descriptors(left, uv, levels)
    cand = torch.arange(n, dtype=uv.dtype, device=uv.device)           # (n,)
    pos = uv.unsqueeze(2).repeat(1, 1, n, 1)                           # (B, K, n, 2)
    pos[..., 0] = pos[..., 0] - cand
    right_desc = network.descriptors(right, pos.reshape(B, K * n, 2), levels).reshape(B, K, n, -1)
    corr = torch.linalg.vecdot(right_desc.to(desc.dtype), desc[:, :, None])
    inside = pos[..., 0] >= -0.5
    corr = corr.masked_fill(~inside, -2.0)
    best, j = corr.max(-1)                                             # (B, K)
    offs = torch.arange(-window, window + 1, device=uv.device)
    jw = (j.unsqueeze(-1) + offs).clamp(0, n - 1)                      # (B, K, 2w+1)
    cw = corr.gather(-1, jw)
    ok = (j.unsqueeze(-1) + offs >= 0) & (j.unsqueeze(-1) + offs < n) & (cw > -2)
    p = torch.softmax((cw / temperature).masked_fill(~ok, float("-inf")), -1)
    disparity = (p * cand[jw]).sum(-1)
    valid = (j > 0) & (j < n - 1) & (best >= min_similarity) & inside.gather(-1, j.unsqueeze(-1)).squeeze(-1)
    return StereoMatch(disparity=disparity, similarity=best, valid=valid)


def as_cameras(camera, batch: int) -> list[StereoCamera]:
    """One :class:`StereoCamera` per item from a camera, a list of them, or a ``(5,)`` / ``(B, 5)``
    tensor ``[fx, fy, cx, cy, baseline]`` (the layout of the training datasets)."""
    if isinstance(camera, StereoCamera):
        return [camera] * batch
    if isinstance(camera, torch.Tensor):
        c = camera.detach().double().cpu()
        if c.shape == (5,):
            c = c.expand(batch, 5)
        if c.shape != (batch, 5):
            raise ValueError(f"camera tensor must have shape (5,) or (B, 5) = ({batch}, 5) "
                             f"[fx, fy, cx, cy, baseline], got {tuple(camera.shape)}")
        return [StereoCamera(*row.tolist()) for row in c]
    if isinstance(camera, Sequence) and len(camera) == batch and all(isinstance(c, StereoCamera) for c in camera):
        return list(camera)
    raise ValueError(f"camera must be a StereoCamera, {batch} of them, or a (B, 5) tensor; "
                     f"got {type(camera).__name__}")


def _same(cams: list[StereoCamera]) -> bool:
    key = lambda c: (c.fx, c.fy, c.cx, c.cy, c.baseline, c.min_disparity)  # noqa: E731
    return all(key(c) == key(cams[0]) for c in cams)


def stereo_points(cameras: list[StereoCamera], uv: Tensor, disparity: Tensor,
                  sigma_px: float) -> tuple[Tensor, Tensor, Tensor]:
    """Triangulate ``uv (B, K, 2)``, ``disparity (B, K)`` in float64.

    Returns ``points (B, K, 3)``, ``inv_cov (B, K, 3, 3)`` (pixel noise ``sigma_px`` on u_left,
    v and u_right) and ``valid (B, K)``; invalid items are zeros with zero gradient.
    """
    uvd = torch.cat([uv, disparity.unsqueeze(-1)], -1).double()
    if len(cameras) != uvd.shape[0]:
        raise ValueError(f"need one camera per item: {len(cameras)} cameras for batch {uvd.shape[0]}")
    groups = [(cameras[0], slice(None))] if _same(cameras) else [
        (c, slice(b, b + 1)) for b, c in enumerate(cameras)]
    pts, W, valid = [], [], []
    for cam, sl in groups:
        p, v = cam.triangulate(uvd[sl])
        w, _ = cam.inverse_covariance(uvd[sl], sigma_px)
        pts.append(p)
        W.append(w)
        valid.append(v)
    return torch.cat(pts), torch.cat(W), torch.cat(valid)
