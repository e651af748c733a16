"""Exact search of a multiplier family for the most positive Lagrangian (a small SDP, per item).

With redundant constraints the multipliers at a KKT point form a family lam + basis @ w, and a
certificate needs a member whose H is PSD. The smooth first-order search in ``certificate`` finds it
on well-scaled problems; on badly scaled ones (e.g. stereo points whose depth weights are 1e-3 of the
lateral ones) the eigenvalues that matter are ~1e-6 of the cost's norm and it stalls. Then
    max t  s.t.  U^T (H0 + sum_k w_k M_k) U >= t I
(U: orthonormal basis of the complement of x) is solved exactly with cvxpy + Clarabel; the problem
is compiled once per size and re-solved with new parameter values.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

Tensor = torch.Tensor


@lru_cache(maxsize=8)
def _problem(d: int, k: int):
    import cvxpy as cp

    H = cp.Parameter((d, d), symmetric=True)
    M = [cp.Parameter((d, d), symmetric=True) for _ in range(k)]
    w, t = cp.Variable(k), cp.Variable()
    lmi = H + sum(w[i] * M[i] for i in range(k)) - t * np.eye(d)
    # |w| bounded so that a family without a PSD member stays a bounded problem
    prob = cp.Problem(cp.Maximize(t), [lmi >> 0, cp.norm(w, "inf") <= 1e4])
    return prob, H, M, w, t


def best_family_member(H0: Tensor, M: Tensor, x: Tensor) -> tuple[Tensor, float]:
    """w (K,) maximising the smallest eigenvalue of H0 + sum_k w_k M_k off x, and that eigenvalue.

    H0 (n, n) Lagrangian of one item; M (K, n, n) its family directions; x (n,) the candidate.
    Returns (zeros, -inf) when the solver fails, so the caller keeps what it had.
    """
    import cvxpy as cp

    keep = M.flatten(1).abs().amax(-1) > 0
    Mk = M[keep].double().cpu().numpy()
    K = Mk.shape[0]
    w_full = torch.zeros(M.shape[0], dtype=H0.dtype, device=H0.device)
    if K == 0:
        return w_full, float("-inf")
    xn = (x / x.norm()).double().cpu().numpy()
    n = xn.shape[0]
    U = np.linalg.svd(np.eye(n) - np.outer(xn, xn))[0][:, : n - 1]
    Hc = U.T @ H0.double().cpu().numpy() @ U
    s = max(float(np.abs(np.linalg.eigvalsh(0.5 * (Hc + Hc.T))).max()), 1e-300)  # unit spectrum
    prob, Hp, Mp, w, t = _problem(n - 1, K)
    Hp.value = 0.5 * (Hc + Hc.T) / s
    for p, Mi in zip(Mp, Mk):
        Mi = U.T @ Mi @ U
        p.value = 0.5 * (Mi + Mi.T) / s
    try:
        prob.solve(solver="CLARABEL")
    except cp.error.SolverError:
        return w_full, float("-inf")
    if w.value is None or prob.status not in ("optimal", "optimal_inaccurate"):
        return w_full, float("-inf")
    w_full[keep] = torch.as_tensor(w.value, dtype=H0.dtype, device=H0.device)
    return w_full, float(t.value) * s
