"""The registration QCQP data a certificate is about, rebuilt from points and a pose.

``register`` centres the clouds (trace-of-W weighted) and scales the cost to unit norm before
certifying; checking a certificate independently, or certifying a different pose (e.g. a perturbed
optimum), needs that same (Q, x) pair.
"""
from __future__ import annotations

import torch

from .registration import cost_matrix, x_from_pose

Tensor = torch.Tensor


def centred_problem(src: Tensor, trg: Tensor, W: Tensor, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(Q (B, 13, 13) of unit Frobenius norm, x (B, 13)) in the centred frame ``register`` certifies in.

    src, trg (B, N, 3); W (B, N, 3, 3) matrix weights (scalar weights included); R (B, 3, 3), t (B, 3)
    the pose T_target_source in the original frame."""
    wc = torch.diagonal(W, dim1=-2, dim2=-1).sum(-1)
    wsum = wc.sum(1, keepdim=True).clamp_min(torch.finfo(src.dtype).tiny)
    cs = (wc.unsqueeze(-1) * src).sum(1) / wsum
    ct = (wc.unsqueeze(-1) * trg).sum(1) / wsum
    Q = cost_matrix(src - cs.unsqueeze(1), trg - ct.unsqueeze(1), W)
    x = x_from_pose(R, t - ct + (R @ cs.unsqueeze(-1)).squeeze(-1))
    return Q / Q.flatten(1).norm(dim=-1).clamp_min(torch.finfo(Q.dtype).tiny).view(-1, 1, 1), x
