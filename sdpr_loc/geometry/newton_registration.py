"""Matrix-weighted registration by damped Newton on SE(3) from a given initial pose.

A local method: it converges (quadratically) to the minimum of whatever basin it starts in. Used as
the Theseus-style local baseline of the stereo calibration example, and to polish a certified
solution to machine precision before its KKT gradient is taken: on stereo data whose depth weights
are ~1e-3 of the lateral ones, Gauss-Newton alone stalls along the board tilt, and the certificate's
stationarity tolerance does not notice, while the implicit gradient there is visibly wrong.
"""
from __future__ import annotations

import torch

from sdpr_loc.certify import SDPRLayer

from .registration import Registration, cost_matrix, pose_from_x, registration_qcqp, x_from_pose
from .se3 import hat, so3_exp

Tensor = torch.Tensor


def weighted_cost(src: Tensor, trg: Tensor, W: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """(B,) sum_i e_i^T W_i e_i with e_i = trg_i - (R src_i + t); src, trg (B, N, 3), W (B, N, 3, 3)."""
    e = trg - src @ R.transpose(1, 2) - t.unsqueeze(1)
    return torch.einsum("bni,bnij,bnj->b", e, W, e)


def newton_register(src: Tensor, trg: Tensor, W: Tensor, init: Tensor, iters: int = 100,
                    tol: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """min_{R,t} sum_i e_i^T W_i e_i, e_i = trg_i - (R src_i + t), from ``init (B, 4, 4)``.

    Residual form (not the QCQP's Q); Newton steps (Gauss-Newton + the residual term) R <- exp(phi^) R,
    t <- t + d with Levenberg-Marquardt damping adapted per item (accepted: /3, rejected: x5); stops
    at the local minimum of whatever basin the initial pose is in. Returns R (B, 3, 3), t (B, 3)
    (detached) and ``minimum (B,)``: positive definite Hessian and a full Newton step <= tol there.
    """
    src, trg, W = src.detach(), trg.detach(), W.detach()
    R, t = init[:, :3, :3].clone(), init[:, :3, 3].clone()
    B = R.shape[0]
    mu = torch.full((B,), 1e-4, dtype=R.dtype)
    cost = weighted_cost(src, trg, W, R, t)
    eye3 = torch.eye(3, dtype=R.dtype).expand(B, src.shape[1], 3, 3)
    for _ in range(iters):
        p = src @ R.transpose(1, 2)
        e = trg - p - t.unsqueeze(1)
        J = torch.cat([hat(p), -eye3], -1)                       # de/d(phi, d): (B, N, 3, 6)
        JW = J.transpose(-1, -2) @ W
        H = (JW @ J).sum(1)
        g = (JW @ e.unsqueeze(-1)).sum(1).squeeze(-1)
        D = torch.diag_embed(torch.diagonal(H, dim1=-2, dim2=-1))
        # + the residual (second-order) term of e in phi: with large residuals Gauss-Newton alone
        # converges slowly or not at all along the weakly observed board tilt
        We = (W @ e.unsqueeze(-1)).squeeze(-1)
        Pe = torch.einsum("bni,bnj->bij", We, p)
        H[:, :3, :3] -= 0.5 * (Pe + Pe.transpose(1, 2)) - torch.diag_embed(
            (We * p).sum((1, 2)).unsqueeze(-1).expand(B, 3))
        # a local minimum: positive definite Hessian and a full Newton step below tol (rad, m)
        pd = torch.linalg.eigvalsh(H)[:, 0] > 0
        H_safe = torch.where(pd.view(B, 1, 1), H, D + torch.eye(6, dtype=H.dtype))
        minimum = pd & (torch.linalg.solve(H_safe, g).abs().amax(-1) <= tol)
        Hd = H + mu.view(B, 1, 1) * D
        step = -torch.linalg.solve(Hd, g)
        R_new, t_new = so3_exp(step[:, :3]) @ R, t + step[:, 3:]
        c_new = weighted_cost(src, trg, W, R_new, t_new)
        ok = c_new <= cost * (1 + 1e-15)  # steps within round-off of the cost are not failures
        R = torch.where(ok.view(B, 1, 1), R_new, R)
        t = torch.where(ok.view(B, 1), t_new, t)
        cost = torch.where(ok, c_new, cost)
        mu = torch.where(ok, mu / 3, mu * 5).clamp(1e-12, 1e12)
        if bool(minimum.all()):
            break
    U, _, Vh = torch.linalg.svd(R)  # re-orthonormalise after many exp updates
    return U @ Vh, t, minimum


# The local "solver" hands the layer the pose it was given: the layer certifies it, and either falls
# back to the SDP where it is not certified ("mask") or differentiates the KKT system there anyway
# ("sdp", what an implicit-differentiation layer around a local solver does).
_AT_POSE = {policy: SDPRLayer(registration_qcqp(), local_solver=lambda Q, A, b, x0: x0,
                              use_sdp=policy == "mask", uncertified=policy) for policy in ("mask", "sdp")}


def register_at(src: Tensor, trg: Tensor, W: Tensor, R: Tensor, t: Tensor,
                uncertified: str = "mask") -> Registration:
    """Certificate and KKT gradients of the registration QCQP at a given pose R (B, 3, 3), t (B, 3).

    src, trg (B, N, 3), W (B, N, 3, 3) as in :func:`~sdpr_loc.geometry.registration.register`.
    ``uncertified="mask"``: items whose pose is not certified are replaced by the SDP solution (and
    masked if that fails too); ``"sdp"``: keep the given pose and its implicit gradient regardless.
    """
    cs, ct = src.detach().mean(1), trg.detach().mean(1)  # centred QCQP, as register() builds it
    tc = t.detach() + (R.detach() @ cs.unsqueeze(-1)).squeeze(-1) - ct
    Q = cost_matrix(src - cs.unsqueeze(1), trg - ct.unsqueeze(1), W)
    x, cert = _AT_POSE[uncertified](Q, x0=x_from_pose(R.detach(), tc))
    R, tc = pose_from_x(x)
    t = tc + ct - (R @ cs.unsqueeze(-1)).squeeze(-1)
    return Registration(R=R, t=t, certificate=cert, cost=weighted_cost(src, trg, W, R, t))
