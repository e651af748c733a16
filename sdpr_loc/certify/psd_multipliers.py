"""Exact search of a multiplier family for the most positive Lagrangian (a small SDP, per item).

With redundant constraints the multipliers at a KKT point form a family lam + basis @ w, and a
certificate needs a member whose H is PSD. The smooth first-order search in ``certificate`` finds it
on well-scaled problems; on badly scaled ones (e.g. stereo points whose depth weights are 1e-3 of the
lateral ones) the eigenvalues that matter are ~1e-6 of the cost's norm and it stalls. Then
    max t  s.t.  U^T (H0 + sum_k w_k M_k) U >= t I
(U: orthonormal basis of the complement of x) is solved exactly with Clarabel, called directly.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

Tensor = torch.Tensor


@lru_cache(maxsize=8)
def _svec(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clarabel's PSD-triangle order for a d x d matrix: (i, j) of the column-major upper triangle
    and the sqrt(2) weights off the diagonal."""
    i = np.concatenate([np.arange(c + 1) for c in range(d)])
    j = np.concatenate([np.full(c + 1, c) for c in range(d)])
    return i, j, np.where(i == j, 1.0, np.sqrt(2.0))


def max_min_eigenvalue(H: np.ndarray, M: np.ndarray, bound: float = 1e4) -> tuple[np.ndarray, float] | None:
    """``max t  s.t.  H + sum_k w_k M_k - t I  PSD,  |w|_inf <= bound`` with Clarabel directly
    (no modelling layer: ~3 ms for 12 x 12, 1.5x faster than a compiled cvxpy problem,
    ``bench/family_search.py``); (w, t) or None."""
    import clarabel
    import scipy.sparse as sp

    d, K = H.shape[0], M.shape[0]
    i, j, wt = _svec(d)
    psd = np.column_stack([-wt[:, None] * M[:, i, j].T, wt * np.eye(d)[i, j]])   # s = svec(H + M w - t I)
    box = np.hstack([np.vstack([np.eye(K), -np.eye(K)]), np.zeros((2 * K, 1))])
    A = sp.csc_matrix(np.vstack([box, psd]))
    b = np.concatenate([np.full(2 * K, float(bound)), wt * H[i, j]])
    q = np.zeros(K + 1)
    q[K] = -1.0
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    try:
        sol = clarabel.DefaultSolver(sp.csc_matrix((K + 1, K + 1)), q, A, b,
                                     [clarabel.NonnegativeConeT(2 * K), clarabel.PSDTriangleConeT(d)],
                                     settings).solve()
    except BaseException as exc:  # a Rust panic surfaces as a BaseException subclass
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        return None
    if str(sol.status).split(".")[-1] not in ("Solved", "AlmostSolved"):
        return None
    x = np.asarray(sol.x)
    return x[:K], float(x[K])


def best_family_member(H0: Tensor, M: Tensor, x: Tensor) -> tuple[Tensor, float]:
    """w (K,) maximising the smallest eigenvalue of H0 + sum_k w_k M_k off x, and that eigenvalue.

    H0 (n, n) Lagrangian of one item; M (K, n, n) its family directions; x (n,) the candidate.
    Returns (zeros, -inf) when the solver fails, so the caller keeps what it had.
    """
    w, t = best_family_member_np(H0.double().cpu().numpy(), M.double().cpu().numpy(), x.double().cpu().numpy())
    return torch.as_tensor(w, dtype=H0.dtype, device=H0.device), t


def best_family_member_np(H0: np.ndarray, M: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """:func:`best_family_member` in numpy (the single-item certificate's path)."""
    keep = np.abs(M.reshape(M.shape[0], -1)).max(-1) > 0
    Mk = M[keep]
    w_full = np.zeros(M.shape[0])
    if Mk.shape[0] == 0:
        return w_full, float("-inf")
    xn = x / np.linalg.norm(x)
    n = xn.shape[0]
    U = np.linalg.svd(np.eye(n) - np.outer(xn, xn))[0][:, : n - 1]
    Hc = U.T @ H0 @ U
    s = max(float(np.abs(np.linalg.eigvalsh(0.5 * (Hc + Hc.T))).max()), 1e-300)  # unit spectrum
    Mc = np.einsum("ia,kij,jb->kab", U, Mk, U)
    got = max_min_eigenvalue(0.5 * (Hc + Hc.T) / s, 0.5 * (Mc + Mc.transpose(0, 2, 1)) / s)
    if got is None:
        return w_full, float("-inf")
    w_full[keep] = got[0]
    return w_full, got[1] * s
