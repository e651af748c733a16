"""Training losses: the pose loss through the registration, a keypoint reprojection loss and
a descriptor loss.

The pose loss is what the certified gradients are for; the keypoint loss (ground-truth
reprojection of the matched points, as in Gridseth & Barfoot 2022) gives every keypoint a
direct signal, which speeds up the start of training when the poses are still far off. The
descriptor loss (cross-entropy of the soft match against the ground-truth pixel, InfoNCE over
every target pixel) is what teaches descriptors to agree across day and night: the pose loss
alone only asks the weighted matches to agree on a pose, which a few lucky matches satisfy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sdpr_loc.geometry.se3 import inverse, se3_log
from sdpr_loc.geometry.stereo import StereoCamera
from sdpr_loc.vision.pipeline import Localization

Tensor = torch.Tensor

__all__ = ["pose_loss", "keypoint_loss", "descriptor_loss", "LossWeights", "LossTerms", "total_loss"]


def _check_T(name: str, T: Tensor) -> None:
    if not isinstance(T, torch.Tensor) or T.dim() != 3 or T.shape[1:] != (4, 4):
        shape = tuple(T.shape) if isinstance(T, torch.Tensor) else type(T).__name__
        raise ValueError(f"{name} must have shape (B, 4, 4), got {shape}")


def pose_loss(T_est: Tensor, T_gt: Tensor, mask: Tensor | None = None, trans_weight: float = 1.0,
              rot_weight: float = 10.0) -> tuple[Tensor, Tensor]:
    """Weighted squared SE(3) log of the error ``T_est T_gt^-1``: ``(mean over mask, per item (B,))``.

    ``w_t |rho|^2 + w_r |phi|^2`` with ``[rho, phi] = log(T_est T_gt^-1)`` (metres, radians).
    Items outside ``mask (B,)`` (e.g. uncertified) contribute neither value nor gradient; with
    no item left the loss is a zero that still depends on T_est (so backward works everywhere).
    """
    _check_T("T_est", T_est)
    _check_T("T_gt", T_gt)
    if T_est.shape != T_gt.shape:
        raise ValueError(f"T_est {tuple(T_est.shape)} and T_gt {tuple(T_gt.shape)} differ in batch size")
    T_gt = T_gt.to(T_est)
    xi = se3_log(T_est @ inverse(T_gt))
    per = trans_weight * (xi[:, :3] ** 2).sum(-1) + rot_weight * (xi[:, 3:] ** 2).sum(-1)
    if mask is None:
        return per.mean(), per
    m = mask.to(per.device, torch.bool)
    safe = torch.where(m, per, torch.zeros_like(per))
    return safe.sum() / m.sum().clamp_min(1), per


def _reproject(source_points: Tensor, source_valid: Tensor, T_gt: Tensor, cameras: list[StereoCamera],
               size: tuple[int, int], mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Ground-truth pixels (B, K, 2) of the source points in the target image and the mask of
    valid points in front of the camera and inside the image (and inside ``mask (B,)``)."""
    B, K, _ = source_points.shape
    if source_valid.shape != (B, K):
        raise ValueError(f"source_valid must be (B, K) = {(B, K)}, got {tuple(source_valid.shape)}")
    _check_T("T_gt", T_gt)
    T = T_gt.to(source_points)
    p = source_points @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    uvd = torch.stack([cam.project(p[b]) for b, cam in enumerate(cameras)])
    H, W = size
    ok = source_valid & (p[..., 2] > 0.1) & (uvd[..., 0] >= 0) & (uvd[..., 0] <= W - 1) & \
        (uvd[..., 1] >= 0) & (uvd[..., 1] <= H - 1)
    if mask is not None:
        ok = ok & mask.to(ok.device, torch.bool).unsqueeze(-1)
    return uvd[..., :2], ok


def keypoint_loss(source_points: Tensor, source_valid: Tensor, target_uv: Tensor, T_gt: Tensor,
                  cameras: list[StereoCamera], size: tuple[int, int], delta: float = 2.0,
                  mask: Tensor | None = None) -> Tensor:
    """Huber loss [px] between matched target pixels and ground-truth reprojections.

    source_points (B, K, 3) in the source left optical frame (from the network's disparity),
    target_uv (B, K, 2) their matches in the target left image, T_gt (B, 4, 4) T_target_source.
    Only valid points that project in front of and inside the target image count; ``mask (B,)``
    drops whole items.
    """
    B, K, _ = source_points.shape
    if target_uv.shape != (B, K, 2):
        raise ValueError(f"target_uv must be (B, K, 2) with (B, K) = {(B, K)}, got {tuple(target_uv.shape)}")
    uv, ok = _reproject(source_points, source_valid, T_gt, cameras, size, mask)
    err = F.huber_loss(target_uv.to(uv.dtype), uv, reduction="none", delta=delta).sum(-1)
    err = torch.where(ok, err, torch.zeros_like(err))
    return (err.sum() / ok.sum().clamp_min(1)).to(target_uv.dtype)


def descriptor_loss(logits: Tensor, source_points: Tensor, source_valid: Tensor, T_gt: Tensor,
                    cameras: list[StereoCamera], size: tuple[int, int], mask: Tensor | None = None) -> Tensor:
    """Cross-entropy of the soft match against the ground-truth pixel (nats, mean over points).

    logits (B, K, H*W): source descriptors' correlation with every target pixel / temperature
    (``SoftMatch.logits``); the label is the ground-truth reprojection of each source point,
    spread bilinearly over its four neighbouring pixels (sub-pixel, no rounding bias). The label
    is a target: no gradient flows into the source points through it.
    """
    B, K, _ = source_points.shape
    H, W = size
    if logits.shape != (B, K, H * W):
        raise ValueError(f"logits must be (B, K, H*W) = {(B, K, H * W)}, got {tuple(logits.shape)}")
    uv, ok = _reproject(source_points.detach(), source_valid, T_gt, cameras, size, mask)
    u0 = uv[..., 0].floor().clamp(0, W - 2)
    v0 = uv[..., 1].floor().clamp(0, H - 2)
    fu, fv = (uv[..., 0] - u0).clamp(0, 1), (uv[..., 1] - v0).clamp(0, 1)
    corners = [(0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)]
    idx = torch.stack([((v0 + dv) * W + u0 + du).long() for du, dv, _ in corners], -1)   # (B, K, 4)
    wts = torch.stack([w for _, _, w in corners], -1).to(logits.dtype)
    idx = torch.where(ok.unsqueeze(-1), idx, torch.zeros_like(idx))
    picked = (logits.gather(-1, idx) * wts).sum(-1)
    ce = torch.logsumexp(logits, -1) - picked
    ce = torch.where(ok, ce, torch.zeros_like(ce))
    return ce.sum() / ok.sum().clamp_min(1)


@dataclass(frozen=True)
class LossWeights:
    """pose: weight of the pose loss; keypoint: of the reprojection loss; descriptor: of the
    descriptor cross-entropy; trans/rot: inside the pose loss; huber_delta: pixels."""

    pose: float = 1.0
    keypoint: float = 0.05
    descriptor: float = 0.0
    trans: float = 1.0
    rot: float = 10.0
    huber_delta: float = 2.0


@dataclass
class LossTerms:
    """total (scalar, differentiable), pose, keypoint and descriptor (detached scalars), per-item
    pose losses (B,), the mask of items trained on and the counts of skipped (uncertified) items."""

    total: Tensor
    pose: Tensor
    keypoint: Tensor
    descriptor: Tensor
    per_item: Tensor
    used: Tensor
    skipped: int


def total_loss(result: Localization, T_gt: Tensor, cameras: list[StereoCamera], size: tuple[int, int],
               weights: LossWeights, uncertified: str = "skip") -> LossTerms:
    """Pose + keypoint loss for a batch, applying the uncertified-item policy.

    uncertified: "skip" (items whose pose is not usable drop out of both losses) or
    "keypoint_only" (they still get the keypoint loss). The descriptor loss needs no pose, so
    every item gets it (when its weight is not zero and the result came from soft matching).
    """
    if uncertified not in ("skip", "keypoint_only"):
        raise ValueError(f"uncertified policy must be 'skip' or 'keypoint_only', got {uncertified!r}")
    used = result.usable
    lp, per = pose_loss(result.T, T_gt, used, weights.trans, weights.rot)
    kp_mask = used if uncertified == "skip" else None
    lk = keypoint_loss(result.source.points, result.source.valid, result.target_uv, T_gt, cameras, size,
                       weights.huber_delta, kp_mask)
    total = weights.pose * lp.float() + weights.keypoint * lk.float()
    ld = torch.zeros((), device=total.device)
    if weights.descriptor and result.match_logits is not None:
        ld = descriptor_loss(result.match_logits, result.source.points, result.source.valid, T_gt,
                             cameras, size)
        total = total + weights.descriptor * ld.float()
    return LossTerms(total=total, pose=lp.detach(), keypoint=lk.detach(), descriptor=ld.detach(),
                     per_item=per.detach(), used=used, skipped=int((~used).sum()))
