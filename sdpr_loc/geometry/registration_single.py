"""One registration problem in numpy/LAPACK: the batch-1 path of ``register``.

A node registers one frame at a time; with 3 x 3, 6 x 6 and 13 x 13 matrices, torch's per-operation
overhead then costs several times the arithmetic. These are the batched torch steps of
``registration.py`` (weighted-SVD start, Gauss-Newton on SE(3), the cost matrix), written for one
item ``(N, 3)`` without a batch dimension, with the same formulas and stopping rules, so both paths
land on the same optimum (tests compare them).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import lapack

from .se3 import hat

_TINY = np.finfo(np.float64).tiny


def _vec_to_jacobian() -> np.ndarray:
    """L (27, 9): (L @ vec(R)).reshape(9, 3) = d vec(R) / d phi for R <- exp(phi^) R, i.e. -hat(r_c) blocks."""
    basis = torch.eye(9, dtype=torch.float64).reshape(9, 3, 3)  # vec column-major: basis[j] = columns of R^T
    return (-hat(basis).reshape(9, 27)).T.numpy().copy()


ROTATION_JACOBIAN = _vec_to_jacobian()
_EYE3 = np.eye(3)
_UPPER = np.triu(np.ones((13, 13), dtype=bool))


def cost_matrix_one(src: np.ndarray, trg: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Q (13, 13) with x^T Q x = sum_i e_i^T W_i e_i for x = [1, vec(R), t]: ``cost_matrix`` for one item.

    Same blocks (sums over points of trg W trg, src_c W trg, src_c src_d W, src_c W, W), each one matrix
    product over the N points; upper triangle mirrored, as there.
    """
    N = src.shape[0]
    W9 = W.reshape(N, 9)
    Wt = np.einsum("nij,nj->ni", W, trg)  # W_i trg_i
    Q = np.zeros((13, 13))
    Q[0, 0] = trg.ravel() @ Wt.ravel()
    Q[0, 1:10] = -(src.T @ Wt).ravel()  # vec index 3c + r
    Q[0, 10:] = -Wt.sum(0)
    SWS = ((src[:, :, None] * src[:, None, :]).reshape(N, 9).T @ W9).reshape(3, 3, 3, 3)  # [c, d, r, s]
    Q[1:10, 1:10] = SWS.transpose(0, 2, 1, 3).reshape(9, 9)
    Q[1:10, 10:] = (src.T @ W9).reshape(9, 3)
    Q[10:, 10:] = W9.sum(0).reshape(3, 3)
    return np.where(_UPPER, Q, Q.T)


def project_so3_one(M: np.ndarray) -> np.ndarray:
    """Nearest rotation to M (3, 3) (as ``_project_so3``); LAPACK directly (numpy's wrapper costs more)."""
    U, _, Vh, info = lapack.dgesdd(M)
    if info != 0:
        raise np.linalg.LinAlgError(f"SVD of a 3x3 matrix did not converge (info {info})")
    R = U @ Vh
    (a, b, c), (d, e, f), (g, h, i) = R.tolist()
    if a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g) < 0:  # det(R) = -1: a reflection
        U[:, 2] = -U[:, 2]
        R = U @ Vh
    return R


def weighted_svd_one(src: np.ndarray, trg: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scalar-weighted Horn/Umeyama for one item (as ``weighted_svd``): R (3, 3), t (3,)."""
    wsum = max(float(w.sum()), _TINY)
    cs, ct = (w @ src) / wsum, (w @ trg) / wsum
    R = project_so3_one((w[:, None] * (trg - ct)).T @ (src - cs))
    return R, ct - R @ cs


def cayley_one(w0: float, w1: float, w2: float) -> np.ndarray:
    """Rotation of the Cayley map of w = (w0, w1, w2), as ``registration.cayley``."""
    K = np.array([[0.0, -w2, w1], [w2, 0.0, -w0], [-w1, w0, 0.0]])
    return _EYE3 + (K + 0.5 * (K @ K)) / (1.0 + 0.25 * (w0 * w0 + w1 * w1 + w2 * w2))


def x_from_pose_one(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.concatenate([[1.0], R.ravel(order="F"), t])


def gauss_newton_one(Q: np.ndarray, R: np.ndarray, t: np.ndarray, iters: int = 30, tol: float = 1e-13,
                     newton_below: float = 0.05) -> np.ndarray:
    """Minimise x^T Q x over SE(3) from (R, t), as ``gauss_newton`` (same steps and switch to Newton): x (13,)."""
    J = np.zeros((13, 6))
    J[10:, 3:] = _EYE3
    reg = 1e-14 * np.eye(6)
    x = np.empty(13)
    x[0] = 1.0
    newton = False
    for _ in range(iters):
        x[1:10], x[10:] = R.T.ravel(), t
        J[1:10, :3] = (ROTATION_JACOBIAN @ x[1:10]).reshape(9, 3)
        Qx = Q @ x
        Hn = J.T @ (Q @ J) + reg
        if newton:
            P = R @ Qx[1:10].reshape(3, 3)  # R G^T
            Hn[:3, :3] += 0.5 * (P + P.T) - np.trace(P) * _EYE3
        _, _, step, info = lapack.dgesv(Hn, J.T @ Qx)  # LU, as torch.linalg.solve
        if info != 0:  # singular normal equations: stop here, the certificate judges the result
            break
        s = step.tolist()
        R = cayley_one(-s[0], -s[1], -s[2]) @ R
        t = t - step[3:]
        size = max(map(abs, s))
        if size < tol:
            break
        newton = size < newton_below
    return x_from_pose_one(project_so3_one(R), t)


def degenerate_one(src: np.ndarray, W: np.ndarray) -> bool:
    """True when fewer than 3 points have weight or they are collinear (``_degenerate_reason`` says why)."""
    active = np.abs(W.reshape(-1, 9)).max(1) > 0
    count = int(active.sum())
    if count < 3:
        return True
    a = active[:, None]
    s = lapack.dgesdd((src - (a * src).sum(0) / count) * a, compute_uv=0)[1]
    return bool(s[1] <= 1e-9 * max(s[0], _TINY))
