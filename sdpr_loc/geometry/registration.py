"""Certified, differentiable registration of matched 3D points with matrix weights.

Finds T_target_source = (R, t) minimising  sum_i w_i e_i^T W_i e_i,  e_i = trg_i - (R src_i + t),
with W_i the 3x3 inverse covariance of each stereo point (the depth direction is much noisier). As a
QCQP over x = [1, vec(R) (column-major), t] (n = 13) with 6 column-orthonormality, 9 handedness and
6 redundant row-orthonormality constraints, its SDP relaxation is tight in practice, so the local
solution comes with a certificate of global optimality (see ``sdpr_loc.certify``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sdpr_loc.certify import QCQP, Certificate, SDPRLayer
from sdpr_loc.certify.certificate import default_tol
from sdpr_loc.certify.single import certify_one
from sdpr_loc.certify.verify import exact_pose_point, verify_qcqp

from . import registration_single as one

from .se3 import hat, hat_np
from .so3_qcqp import so3_constraints

Tensor = torch.Tensor
METHODS = ("certified", "sdp", "svd", "local")
# 180-degree flips about x, y, z: where a local solver lands when it picks the wrong basin.
FLIPS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])


@dataclass
class Registration:
    """R (B, 3, 3), t (B, 3) with trg ~ R src + t; certificate per item; cost (B,) = weighted SSE."""

    R: Tensor
    t: Tensor
    certificate: Certificate
    cost: Tensor

    @property
    def T(self) -> Tensor:
        """Homogeneous T_target_source (B, 4, 4)."""
        T = torch.zeros(*self.R.shape[:-2], 4, 4, dtype=self.R.dtype, device=self.R.device)
        T[..., :3, :3] = self.R
        T[..., :3, 3] = self.t
        T[..., 3, 3] = 1.0
        return T


def registration_qcqp() -> QCQP:
    A, names, red = so3_constraints(13)
    return QCQP(A=A, redundant=red, names=names)


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------
def _check_inputs(src, trg, weights, inv_cov):
    for name, P in (("src", src), ("trg", trg)):
        if not isinstance(P, torch.Tensor) or P.dim() != 3 or P.shape[-1] != 3:
            shape = tuple(P.shape) if isinstance(P, torch.Tensor) else type(P).__name__
            raise ValueError(f"{name} must have shape (B, N, 3), got {shape}")
        if not P.is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor, got {P.dtype}")
    if src.shape != trg.shape:
        raise ValueError(f"src and trg must have the same shape, got {tuple(src.shape)} and {tuple(trg.shape)}")
    B, N, _ = src.shape
    if weights is None:
        weights = src.new_ones(B, N)
    elif weights.shape != (B, N):
        raise ValueError(f"weights must have shape (B, N) = {(B, N)}, got {tuple(weights.shape)}")
    if inv_cov is None:
        inv_cov = torch.eye(3, dtype=src.dtype, device=src.device).expand(B, N, 3, 3)
    elif inv_cov.shape != (B, N, 3, 3):
        raise ValueError(f"inv_cov must have shape (B, N, 3, 3) = {(B, N, 3, 3)}, got {tuple(inv_cov.shape)}")
    for name, v in (("src", src), ("trg", trg), ("weights", weights), ("inv_cov", inv_cov)):
        if not _all_finite(v):
            raise ValueError(f"{name} contains NaN or inf")
    wa = _cpu_array(weights)
    if bool((wa < 0).any() if wa is not None else (weights < 0).any()):
        raise ValueError("weights must be >= 0")
    return weights.to(src.dtype), inv_cov.to(src.dtype)


def _cpu_array(v: Tensor) -> np.ndarray | None:
    """The numpy view of a float CPU tensor (value checks there cost a fraction of torch's per-op overhead)."""
    return v.detach().numpy() if v.device.type == "cpu" and v.dtype in (torch.float64, torch.float32) else None


def _all_finite(v: Tensor) -> bool:
    a = _cpu_array(v)
    return bool(np.isfinite(a).all()) if a is not None else bool(torch.isfinite(v).all())


def _degenerate_reason(src: Tensor, W: Tensor) -> list[str]:
    """Why the pose is not determined by the data ('' when it is): < 3 points, collinear points."""
    active = W.detach().flatten(2).ne(0).any(-1).to(src.dtype)
    count = active.sum(1)
    mean = (active.unsqueeze(-1) * src.detach()).sum(1) / count.clamp_min(1).unsqueeze(-1)
    s = torch.linalg.svdvals((src.detach() - mean.unsqueeze(1)) * active.unsqueeze(-1))
    collinear = s[:, 1] <= 1e-9 * s[:, 0].clamp_min(torch.finfo(src.dtype).tiny)
    few = count < 3
    if not bool((few | collinear).any()):
        return [""] * src.shape[0]
    return [f"fewer than 3 points with nonzero weight ({int(c)})" if f else
            "source points are collinear (rotation about their line is free)" if col else ""
            for c, f, col in zip(count.tolist(), few.tolist(), collinear.tolist())]


# ------------------------------------------------------------------------------------------------
# cost matrix
# ------------------------------------------------------------------------------------------------
def cost_matrix(src: Tensor, trg: Tensor, W: Tensor) -> Tensor:
    """Q (B, 13, 13) with x^T Q x = sum_i e_i^T W_i e_i, x = [1, vec(R), t], e_i = trg_i - R src_i - t.

    W (B, N, 3, 3) already includes the scalar weights. e_i = D_i x with
    D_i = [trg_i, -(src_i^T kron I3), -I3]; Q = sum_i D_i^T W_i D_i, assembled blockwise.
    """
    B, N, _ = src.shape
    Wsum = W.sum(1)                                          # (B,3,3)
    Wt = torch.einsum("bnij,bnj->bni", W, trg)               # W_i trg_i
    q00 = torch.einsum("bni,bni->b", trg, Wt)
    # blocks involving vec(R): (src^T kron I) -> index (3c + r)
    SW = torch.einsum("bnc,bnrs->bcrs", src, W)              # sum_i src_ic W_i  -> (B,3c,3r,3s)
    SWt = torch.einsum("bnc,bnr->bcr", src, Wt)              # sum_i src_ic (W_i trg_i)_r
    SWS = torch.einsum("bnc,bnd,bnrs->bcdrs", src, src, W)   # sum src_ic src_id W_i
    Q = src.new_zeros(B, 13, 13)
    Q[:, 0, 0] = q00
    Q[:, 0, 1:10] = -SWt.reshape(B, 9)
    Q[:, 0, 10:] = -Wt.sum(1)
    Q[:, 1:10, 1:10] = SWS.permute(0, 1, 3, 2, 4).reshape(B, 9, 9)
    Q[:, 1:10, 10:] = SW.reshape(B, 9, 3)
    Q[:, 10:, 10:] = Wsum
    Q = torch.triu(Q) + torch.triu(Q, 1).transpose(1, 2)
    return Q


def laplace_covariance(src: np.ndarray, inv_cov: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(6, 6) covariance of the pose at the optimum ``(R (3, 3), t (3,))`` of this cost: the inverse
    Gauss-Newton Hessian (Laplace approximation). Numpy float64; ``src (N, 3)`` and ``inv_cov
    (N, 3, 3)`` are the kept matches (weights folded in).

    Perturbation: left, in the target frame, ordered (translation, rotation); with
    ``p_i = R src_i + t``, ``d e_i / d(rho, phi) = J_i = [-I, [p_i]x]`` and the information is
    ``sum_i J_i^T W_i J_i``. A pseudo-inverse, so a degenerate point set does not raise.
    """
    p = src @ R.T + t
    n = len(p)
    J = np.zeros((n, 3, 6))
    J[:, :, :3] = -np.eye(3)
    J[:, :, 3:] = hat_np(p) if n else np.zeros((0, 3, 3))
    info = np.einsum("nai,nab,nbj->ij", J, inv_cov, J)
    return np.linalg.pinv(info, hermitian=True)


def fused_points(src: np.ndarray, S_src: np.ndarray, trg: np.ndarray, S_trg: np.ndarray, R: np.ndarray,
                 t: np.ndarray) -> np.ndarray:
    """Best estimates ``(N, 3)`` of matched points in the target frame, given the pose: the
    information-weighted mean of ``trg`` and ``R src + t`` (covariances ``S_trg`` and
    ``R S_src R^T``). Numpy float64."""
    A = np.linalg.inv(S_trg)
    B = np.linalg.inv(R @ S_src @ R.T)
    rhs = np.einsum("nij,nj->ni", A, trg) + np.einsum("nij,nj->ni", B, src @ R.T + t)
    return np.linalg.solve(A + B, rhs[..., None])[..., 0]


def x_from_pose(R: Tensor, t: Tensor) -> Tensor:
    return torch.cat([R.new_ones(R.shape[0], 1), R.transpose(1, 2).reshape(-1, 9), t], 1)


def pose_from_x(x: Tensor) -> tuple[Tensor, Tensor]:
    return x[:, 1:10].reshape(-1, 3, 3).transpose(1, 2), x[:, 10:13]


# ------------------------------------------------------------------------------------------------
# baselines and the local solver
# ------------------------------------------------------------------------------------------------
# (9, 27): vec(R) @ it = d vec(R) / d phi for R <- exp(phi^) R; (3, 9): w @ it = hat(w) flattened.
_ROTATION_MAPS = (torch.from_numpy(one.ROTATION_JACOBIAN.T.copy()), hat(torch.eye(3, dtype=torch.float64)).reshape(3, 9))


def _project_so3(M: Tensor) -> Tensor:
    U, _, Vh = torch.linalg.svd(M)
    d = torch.det(U @ Vh)
    U = torch.cat([U[..., :2], U[..., 2:] * d.view(-1, 1, 1)], -1)
    return U @ Vh


def weighted_svd(src: Tensor, trg: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Scalar-weighted Umeyama/Horn: closed form for isotropic weights (the SVD baseline)."""
    wsum = w.sum(1, keepdim=True).clamp_min(torch.finfo(src.dtype).tiny)
    cs = (w.unsqueeze(-1) * src).sum(1) / wsum
    ct = (w.unsqueeze(-1) * trg).sum(1) / wsum
    Hm = (w.unsqueeze(-1) * (trg - ct.unsqueeze(1))).transpose(1, 2) @ (src - cs.unsqueeze(1))
    R = _project_so3(Hm)
    return R, ct - (R @ cs.unsqueeze(-1)).squeeze(-1)


def cayley(w: Tensor) -> Tensor:
    """Rotation (B, 3, 3) of the Cayley map of w (B, 3): I + (K + K^2 / 2) / (1 + |w|^2 / 4), K = hat(w).

    Equals exp(hat(w)) up to O(|w|^3): the retraction of Gauss-Newton, without trigonometry.
    """
    K = (w @ _ROTATION_MAPS[1].to(w.dtype).to(w.device)).view(-1, 3, 3)
    c = 1.0 / (1.0 + 0.25 * (w * w).sum(-1)).view(-1, 1, 1)
    return torch.eye(3, dtype=w.dtype, device=w.device) + c * (K + 0.5 * (K @ K))


def gauss_newton(Q: Tensor, R: Tensor, t: Tensor, iters: int = 30, tol: float = 1e-13,
                 newton_below: float = 0.05) -> Tensor:
    """Minimise x^T Q x over SE(3) from (R, t) by Gauss-Newton with R <- cayley(phi) R, t <- t + d.

    Once every step is below ``newton_below`` (near a minimum) the rotation block gets the curvature of
    the retraction too, sym(P) - tr(P) I with P = R G^T, G = (Q x)_R (a full Newton step: quadratic
    instead of linear convergence, 4 iterations instead of 6-7). Works from Q alone, so it serves any
    quadratic pose cost. No gradients flow through it (the KKT backward differentiates the optimum), so
    x and J are updated in place.
    """
    B = Q.shape[0]
    jac = _ROTATION_MAPS[0].to(Q.dtype).to(Q.device)
    eye3 = torch.eye(3, dtype=Q.dtype, device=Q.device)
    J = Q.new_zeros(B, 13, 6)
    J[:, 10:, 3:] = eye3
    reg = 1e-14 * torch.eye(6, dtype=Q.dtype, device=Q.device)
    x = Q.new_ones(B, 13)
    newton = False
    for _ in range(iters):
        x[:, 1:10] = R.transpose(1, 2).reshape(B, 9)
        x[:, 10:] = t
        J[:, 1:10, :3] = (x[:, 1:10] @ jac).view(B, 9, 3)  # d vec(R) / d phi: -[r_c]x blocks
        Qx = Q @ x.unsqueeze(-1)
        Hn = J.transpose(1, 2) @ (Q @ J) + reg
        if newton:
            P = R @ Qx[:, 1:10].view(B, 3, 3)  # R G^T
            Hn[:, :3, :3] += 0.5 * (P + P.transpose(1, 2)) - P.diagonal(dim1=1, dim2=2).sum(-1).view(B, 1, 1) * eye3
        step = torch.linalg.solve(Hn, J.transpose(1, 2) @ Qx).squeeze(-1)
        R = cayley(-step[:, :3]) @ R  # the step is -step
        t = t - step[:, 3:]
        size = float(step.abs().max())
        if size < tol:
            break
        newton = size < newton_below
    return x_from_pose(_project_so3(R), t)


def _local_solver(Q: Tensor, A: Tensor, b: Tensor, x0: Tensor | None = None) -> Tensor:
    if x0 is None:  # linear least squares without the rotation constraints, then projection
        z = -torch.linalg.lstsq(Q[:, 1:, 1:], Q[:, 1:, :1]).solution.squeeze(-1)
        R0, t0 = _project_so3(z[:, :9].reshape(-1, 3, 3).transpose(1, 2)), z[:, 9:]
    else:
        R0, t0 = pose_from_x(x0)
    return gauss_newton(Q, R0, t0)


def _flip_restarts(Q: Tensor, A: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """Gauss-Newton from the 180-degree flips of the failed rotation: (B, 3, 13)."""
    R, t = pose_from_x(x)
    flips = FLIPS.to(Q.dtype).to(Q.device)
    cands = [gauss_newton(Q, R @ torch.diag(f), t) for f in flips]
    cands += [gauss_newton(Q, torch.diag(f) @ R, t) for f in flips]
    return torch.stack(cands, 1)


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------
_LAYERS: dict[tuple, SDPRLayer] = {}


def _layer(local: bool, solver: str, uncertified: str) -> SDPRLayer:
    key = (local, solver, uncertified)
    if key not in _LAYERS:
        _LAYERS[key] = SDPRLayer(registration_qcqp(), local_solver=_local_solver if local else None,
                                 restarts=_flip_restarts if local else None, solver=solver,
                                 uncertified=uncertified)
    return _LAYERS[key]


def register(src: Tensor, trg: Tensor, weights: Tensor | None = None, inv_cov: Tensor | None = None,
             method: str = "certified", solver: str = "clarabel", uncertified: str = "mask",
             init: Tensor | None = None, verify: bool = False) -> Registration:
    """Relative pose T_target_source with trg ~ R src + t.

    Args:
        src, trg: matched points (B, N, 3), e.g. in the source / target left-camera optical frames.
        weights: (B, N) scalar weights >= 0 (None: ones). Zero drops a point.
        inv_cov: (B, N, 3, 3) inverse covariances (matrix weights; None: identity).
        method: "certified" (local solve + certificate, flips, SDP fallback), "sdp" (always the SDP),
            "svd" (scalar-weighted closed form baseline; ignores inv_cov), "local" (Gauss-Newton with
            the matrix weights, no certificate).
        solver: SDP solver for the fallback ("clarabel", "scs", "mosek").
        uncertified: SDPRLayer policy for items that cannot be certified ("mask", "raise", "sdp").
        init: optional (B, 4, 4) initial T_target_source for the local solver (default: weighted SVD).
        verify: also prove the certificate in exact arithmetic ("certified"/"sdp"): sets
            certificate.verified and certificate.proven_gap (see ``sdpr_loc.certify.verify``).
    Returns:
        Registration(R, t, certificate, cost); differentiable w.r.t. all inputs on certified items
        ("certified"/"sdp") or through the closed form ("svd").
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    weights, inv_cov = _check_inputs(src, trg, weights, inv_cov)
    if method == "certified" and not verify and _single_path_applies(src, trg, weights, inv_cov, init):
        reg = _register_one(src, trg, weights, inv_cov, init)
        if reg is not None:
            return reg
    W = weights[..., None, None] * inv_cov
    B = src.shape[0]
    degenerate = _degenerate_reason(src, W)

    # Centre both clouds (weighted by the trace of W): a far origin ruins SDP accuracy and the margin.
    wc = torch.diagonal(W, dim1=-2, dim2=-1).sum(-1).detach()
    wsum = wc.sum(1, keepdim=True).clamp_min(torch.finfo(src.dtype).tiny)
    cs = ((wc.unsqueeze(-1) * src).sum(1) / wsum).detach()
    ct = ((wc.unsqueeze(-1) * trg).sum(1) / wsum).detach()
    s0, t0 = src - cs.unsqueeze(1), trg - ct.unsqueeze(1)
    # ... and scale them to unit RMS spread (W by the square, so the cost is unchanged): with metres
    # of spread the rotation block of Q outweighs the translation block by spread^2, and on real
    # drives (points 3-80 m away) that squeezed the certificate margin below tolerance. A constant
    # change of variables t' = t / scale: certificates and KKT gradients carry over exactly.
    spread = ((wc * (s0.detach().pow(2).sum(-1) + t0.detach().pow(2).sum(-1))).sum(1) / (2 * wsum[:, 0])).sqrt()
    scale = spread.clamp_min(1.0)[:, None]   # only shrink: sub-metre problems stay as they were

    if init is not None:
        if not isinstance(init, torch.Tensor) or init.shape != (B, 4, 4):
            raise ValueError(f"init must have shape (B, 4, 4) = {(B, 4, 4)}")
        init = init.detach().to(src.dtype)
        R_init = init[:, :3, :3]
        t_init = (init[:, :3, 3] + (R_init @ cs.unsqueeze(-1)).squeeze(-1) - ct) / scale  # centred, scaled

    def initial_pose():
        if init is not None:
            return R_init, t_init
        return weighted_svd(s0.detach() / scale[..., None], t0.detach() / scale[..., None], wc)

    if method == "svd":
        R, tc = weighted_svd(s0, t0, weights)
        cert = no_certificate(B, src, "svd baseline: no certificate")
    else:
        sc = scale[..., None]
        Q = cost_matrix(s0 / sc, t0 / sc, W * sc[..., None] ** 2)
        if method == "local":
            x = gauss_newton(Q.detach(), *initial_pose())
            # differentiable through the same KKT backward, but nothing proves it is the global optimum
            R, tc = pose_from_x(x)
            cert = no_certificate(B, src, "local method: no certificate requested")
        else:
            kwargs = {}
            if method == "certified":
                kwargs["x0"] = x_from_pose(*initial_pose())
            x, cert = _layer(method == "certified", solver, uncertified)(Q, **kwargs)
            R, tc = pose_from_x(x)
            if verify:
                verify_qcqp(Q, x, cert, registration_qcqp(), exact_pose_point)
        tc = tc * scale
    for i, why in enumerate(degenerate):
        if why:
            cert.certified[i] = False
            cert.reason[i] = why
    t = tc + ct - (R @ cs.unsqueeze(-1)).squeeze(-1)
    e = trg - (src @ R.transpose(1, 2) + t.unsqueeze(1))
    cost = (e * (W @ e.unsqueeze(-1)).squeeze(-1)).sum((1, 2))
    return Registration(R=R, t=t, certificate=cert, cost=cost)


def _single_path_applies(*tensors) -> bool:
    """One float64 CPU problem without gradients: the numpy/LAPACK path (``registration_single``)."""
    src = tensors[0]
    return (src.shape[0] == 1 and src.dtype == torch.float64 and src.device.type == "cpu"
            and not (torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)))


def _register_one(src: Tensor, trg: Tensor, weights: Tensor, inv_cov: Tensor,
                  init: Tensor | None) -> Registration | None:
    """``register(method="certified")`` for B = 1 in numpy; None (take the batched path) unless a local
    solution is certified: the first, or the best of its flips' (as ``_flip_restarts``; the SDP
    fallback and the reasons for failures stay in one place)."""
    s, tg, w, C = (v[0].detach().numpy() for v in (src, trg, weights, inv_cov))  # no_grad callers may pass leaves
    W = w[:, None, None] * C
    if one.degenerate_one(s, W):
        return None
    wc = np.einsum("nii->n", W)
    wsum = max(float(wc.sum()), np.finfo(np.float64).tiny)
    cs, ct = (wc @ s) / wsum, (wc @ tg) / wsum
    s0, t0 = s - cs, tg - ct
    # unit RMS spread, exactly as the batched path (same Q, same certificate)
    spread = float(np.sqrt((wc * ((s0 ** 2).sum(-1) + (t0 ** 2).sum(-1))).sum() / (2 * wsum)))
    sc = max(spread, 1.0)
    if init is not None:
        if not isinstance(init, torch.Tensor) or init.shape != (1, 4, 4):
            raise ValueError(f"init must have shape (B, 4, 4) = {(1, 4, 4)}")
        T0 = init[0].detach().double().numpy()
        R0, tr0 = T0[:3, :3], (T0[:3, 3] + T0[:3, :3] @ cs - ct) / sc  # centred, scaled frame
    else:
        R0, tr0 = one.weighted_svd_one(s0 / sc, t0 / sc, wc)
    Q = one.cost_matrix_one(s0 / sc, t0 / sc, W * sc ** 2)
    qn = max(float(np.linalg.norm(Q)), np.finfo(np.float64).tiny)
    Qs = Q / qn
    x = one.gauss_newton_one(Qs, R0, tr0)
    layer = _layer(True, "clarabel", "mask")
    certify = lambda x: certify_one(Qs, x, layer.template_arrays, default_tol(torch.float64), layer.min_margin)  # noqa: E731
    cert = certify(x)
    if cert is None or not cert.certified:   # a local minimum: Gauss-Newton from its flips (_flip_restarts)
        R1, t1 = x[1:10].reshape(3, 3, order="F"), x[10:]
        best = None
        for f in FLIPS.numpy():
            for R2 in (R1 * f[None, :], f[:, None] * R1):          # R diag(f), diag(f) R
                xc = one.gauss_newton_one(Qs, R2, t1)
                c = certify(xc)
                if c is not None and c.certified and (best is None or xc @ Qs @ xc < best[0] @ Qs @ best[0]):
                    best = (xc, c)
        if best is None:
            return None
        x, cert = best
    R = x[1:10].reshape(3, 3, order="F")
    t = x[10:] * sc + ct - R @ cs
    e = tg - (s @ R.T + t)
    cost = np.einsum("ni,nij,nj->", e, W, e)
    return Registration(R=torch.from_numpy(R.copy()).unsqueeze(0), t=torch.from_numpy(t).unsqueeze(0),
                        certificate=cert.to_certificate(), cost=torch.tensor([cost], dtype=torch.float64))


def no_certificate(B: int, like: Tensor, why: str) -> Certificate:
    """A B-item certificate that holds nowhere, saying ``why`` (baselines, degenerate input)."""
    nan = torch.full((B,), float("nan"), dtype=like.dtype, device=like.device)
    return Certificate(certified=torch.zeros(B, dtype=torch.bool, device=like.device), min_eig=nan,
                       margin=nan.clone(), gap=nan.clone(), rank_ratio=nan.clone(),
                       multipliers=like.new_zeros(B, 0), method=["none"] * B, residual=nan.clone(),
                       violation=nan.clone(), reason=[why] * B)


def ransac(src: Tensor, trg: Tensor, weights: Tensor | None = None, inv_cov: Tensor | None = None,
           threshold: float = 7.81, iterations: int = 128, refine_rounds: int = 2,
           generator: torch.Generator | None = None, **register_kwargs) -> tuple[Registration, Tensor]:
    """Robust registration: 3-point SVD hypotheses, Mahalanobis inlier test, certified refit.

    Args:
        threshold: inlier gate on e^T W e (W = inv_cov; Euclidean squared distance without it).
            7.81 is the 95% chi-square quantile with 3 degrees of freedom.
        iterations: hypotheses per item (all items are scored in one batched pass).
        refine_rounds: certified refit -> re-gate inliers, repeated; the returned registration is
            always fitted on exactly the returned inliers (the certificate is about them).
    Returns:
        (Registration of the final certified refit on the inliers, inliers (B, N) bool).
    """
    weights, inv_cov = _check_inputs(src, trg, weights, inv_cov)
    B, N, _ = src.shape
    if N < 3:
        raise ValueError(f"ransac needs at least 3 matches, got N = {N}")
    usable = weights > 0
    with torch.no_grad():
        # sample 3 distinct usable points per hypothesis (Gumbel top-k on the usable mask)
        noise = torch.rand(B, iterations, N, generator=generator, dtype=src.dtype).to(src.device)
        keys = torch.where(usable.unsqueeze(1), noise, torch.full_like(noise, -1.0))
        idx = keys.topk(3, dim=-1).indices                              # (B, K, 3)
        take = lambda P: torch.gather(P.unsqueeze(1).expand(B, iterations, N, 3), 2,  # noqa: E731
                                      idx.unsqueeze(-1).expand(B, iterations, 3, 3))
        s3, t3 = take(src).reshape(-1, 3, 3), take(trg).reshape(-1, 3, 3)
        R, t = weighted_svd(s3, t3, torch.ones(B * iterations, 3, dtype=src.dtype, device=src.device))
        R, t = R.view(B, iterations, 3, 3), t.view(B, iterations, 3)
        e = trg.unsqueeze(1) - (torch.einsum("bkij,bnj->bkni", R, src) + t.unsqueeze(2))
        d2 = torch.einsum("bkni,bnij,bknj->bkn", e, inv_cov, e)
        inl = (d2 < threshold) & usable.unsqueeze(1)
        score = inl.sum(-1).to(src.dtype) - 1e-9 * torch.where(inl, d2, torch.zeros_like(d2)).sum(-1)
        inliers = inl.gather(1, score.argmax(1).view(B, 1, 1).expand(B, 1, N)).squeeze(1)
    reg = None
    for _ in range(max(1, refine_rounds)):
        reg = register(src, trg, weights * inliers.to(src.dtype), inv_cov, **register_kwargs)
        with torch.no_grad():
            e = trg - (src @ reg.R.detach().transpose(1, 2) + reg.t.detach().unsqueeze(1))
            new = (torch.einsum("bni,bnij,bnj->bn", e, inv_cov, e) < threshold) & usable
        grow = new.sum(1) >= 3
        if bool((new == inliers).all()):
            break
        inliers = torch.where(grow.unsqueeze(-1), new, inliers)
    else:  # the last re-gate changed the inliers: the returned pose must be the optimum for THEM
        reg = register(src, trg, weights * inliers.to(src.dtype), inv_cov, **register_kwargs)
    return reg, inliers
