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


def cost_matrix_one(src: np.ndarray, trg: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Q (13, 13) with x^T Q x = sum_i e_i^T W_i e_i for x = [1, vec(R), t] (one item of ``cost_matrix``).

    e_i = D_i x with D_i = [trg_i, -(src_i^T kron I3), -I3] (3 x 13); Q = sum_i D_i^T W_i D_i as one
    (13 x 3N) @ (3N x 13) product.
    """
    N = src.shape[0]
    D = np.zeros((N, 3, 13))
    D[:, :, 0] = trg
    for c in range(3):
        D[:, :, 1 + 3 * c:4 + 3 * c] = -src[:, c, None, None] * _EYE3
    D[:, :, 10:] = -_EYE3
    Q = D.reshape(3 * N, 13).T @ (W @ D).reshape(3 * N, 13)
    return 0.5 * (Q + Q.T)


def project_so3_one(M: np.ndarray) -> np.ndarray:
    """Nearest rotation to M (3, 3) (as ``_project_so3``); LAPACK directly (numpy's wrapper costs more)."""
    U, _, Vh, info = lapack.dgesdd(M)
    if info != 0:
        raise np.linalg.LinAlgError(f"SVD of a 3x3 matrix did not converge (info {info})")
    R = U @ Vh
    if np.linalg.det(R) < 0:
        U[:, 2] = -U[:, 2]
        R = U @ Vh
    return R


def weighted_svd_one(src: np.ndarray, trg: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scalar-weighted Horn/Umeyama for one item (as ``weighted_svd``): R (3, 3), t (3,)."""
    wsum = max(float(w.sum()), _TINY)
    cs, ct = (w @ src) / wsum, (w @ trg) / wsum
    R = project_so3_one((w[:, None] * (trg - ct)).T @ (src - cs))
    return R, ct - R @ cs


def cayley_one(w: np.ndarray) -> np.ndarray:
    """Rotation of the Cayley map of w (3,), as ``registration.cayley``."""
    w0, w1, w2 = w.tolist()
    K = np.array([[0.0, -w2, w1], [w2, 0.0, -w0], [-w1, w0, 0.0]])
    return _EYE3 + (K + 0.5 * (K @ K)) / (1.0 + 0.25 * (w0 * w0 + w1 * w1 + w2 * w2))


def x_from_pose_one(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.concatenate([[1.0], R.ravel(order="F"), t])


def gauss_newton_one(Q: np.ndarray, R: np.ndarray, t: np.ndarray, iters: int = 30,
                     tol: float = 1e-13) -> np.ndarray:
    """Minimise x^T Q x over SE(3) from (R, t), as ``gauss_newton`` (R <- cayley(phi) R, t <- t + d): x (13,)."""
    J = np.zeros((13, 6))
    J[10:, 3:] = _EYE3
    reg = 1e-14 * np.eye(6)
    x = np.empty(13)
    x[0] = 1.0
    for _ in range(iters):
        x[1:10], x[10:] = R.T.ravel(), t
        J[1:10, :3] = (ROTATION_JACOBIAN @ x[1:10]).reshape(9, 3)
        QJ = Q @ J
        _, _, step, info = lapack.dgesv(J.T @ QJ + reg, QJ.T @ x)  # LU, as torch.linalg.solve
        if info != 0:  # singular normal equations: stop here, the certificate judges the result
            break
        R = cayley_one(-step[:3]) @ R
        t = t - step[3:]
        if np.abs(step).max() < tol:
            break
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
